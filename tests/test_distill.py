"""Distillation into a small student: the loss by its formula, a frozen teacher, and that it learns."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from cropssl.losses.distill import EmbeddingDistillLoss
from tests.conftest import PRESTO, require_shared
from tests.test_pretrain import pretrain


def test_distill_loss_is_mse_plus_cosine_distance():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    mse = ((s - t) ** 2).mean()
    cos = torch.tensor([float(a @ b / (a.norm() * b.norm())) for a, b in zip(s, t, strict=True)])
    expected = mse + 0.5 * (1 - cos).mean()
    torch.testing.assert_close(EmbeddingDistillLoss(0.5)(s, t), expected)
    assert float(EmbeddingDistillLoss()(t, t)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        EmbeddingDistillLoss()(s, t[:, :4])


def test_teacher_is_frozen_and_only_the_student_is_optimised():
    require_shared(PRESTO / "default_model.pt")
    from cropssl.encoder import PixelTimeSeriesEncoder
    from cropssl.methods.distill import Distill
    from cropssl.schema import Batch
    from tests.conftest import make_samples

    m = Distill(PixelTimeSeriesEncoder(d=32, depth=1, heads=4), schedule={"total_steps": 10}).train()
    assert not m.teacher.training and not any(p.requires_grad for p in m.teacher.parameters())
    opt = m.configure_optimizers()["optimizer"]
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in m.teacher.parameters()}
    assert {id(p) for p in m.encoder.parameters()} <= optimised
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    loss, logs = m.shared_step(Batch.from_samples(make_samples(16)))
    loss.backward()
    opt.step()
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in before.items())
    assert -1 <= float(logs["cosine"]) <= 1


@pytest.mark.slow
def test_distillation_lowers_the_student_teacher_loss_on_real_shards(real_shards, tmp_path):
    require_shared(PRESTO / "default_model.pt")
    run = tmp_path / "r"
    pretrain("method=distill", "encoder=small", f"data.train={real_shards}", f"run_dir={run}",
             "trainer.max_steps=80", "data.batch_size=64", "trainer.log_every_n_steps=1",
             "trainer.enable_progress_bar=false")  # fmt: skip
    loss = pd.read_csv(run / "metrics.csv")["train/loss"].dropna().to_numpy()
    cos = pd.read_csv(run / "metrics.csv")["train/cosine"].dropna().to_numpy()
    assert loss[-20:].mean() < 0.7 * loss[:20].mean() and cos[-20:].mean() > cos[:20].mean()
