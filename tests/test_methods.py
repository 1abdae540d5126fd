"""Every SSL method on the shared base: a real Hydra config, real Lightning, real shards (no mocks)."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cropssl.config import CONFIG_DIR
from cropssl.data.datamodule import PixelDataModule
from cropssl.data.shard_writer import write_shards
from cropssl.methods.teacher import EMATeacher
from tests.conftest import ROOT, make_samples
from tests.test_pretrain import METHOD_TINY, pretrain, tiny

METHODS = ["mae", "simclr", "mocov3", "byol", "dino", "barlow", "vicreg"]
TEACHER_METHODS = ["mocov3", "byol", "dino"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods") / "sh"
    write_shards(make_samples(600, seed=7), out, samples_per_record=100, records_per_shard=2)
    return out


def build(method: str, *overrides: str):
    """Encoder + method exactly as cropssl-pretrain builds them, from the real config."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "pretrain", overrides=["encoder=tiny", f"method={method}", *METHOD_TINY[method], *overrides]
        )
    torch.manual_seed(0)
    encoder = instantiate(cfg.encoder)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    method_cfg.pop("name")
    return instantiate(method_cfg, encoder=encoder, _convert_="all")


def fit(method, shards, steps: int, **trainer_kw):
    dm = PixelDataModule(str(shards), batch_size=32, shuffle_buffer=64, steps_per_epoch=20)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **trainer_kw,
    )
    trainer.fit(method, datamodule=dm)
    return trainer


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_and_keeps_its_state_in_the_state_dict(name, shards):
    method = build(name)
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    trainer = fit(method, shards, steps=3)
    assert trainer.global_step == 3
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    after = method.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the encoder did not change"
    keys = method.state_dict().keys()
    if name in TEACHER_METHODS:
        teacher = {
            k.removeprefix("teacher.ema.module.encoder."): v
            for k, v in method.state_dict().items()
            if k.startswith("teacher.ema.module.encoder.")
        }
        assert teacher.keys() == after.keys()
        # the teacher moved towards the student but is not the student
        assert any(not torch.equal(teacher[k], after[k]) for k in teacher)
        assert any(not torch.equal(teacher[k], before[k]) for k in teacher)
        assert not any(p.requires_grad for p in method.teacher.parameters())
    if name == "dino":
        assert "loss_fn.center" in keys


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_in_bf16_mixed_precision(name, shards):
    """``trainer.precision=bf16-mixed`` (the GPU recipe; CPU autocast runs the same casts): the first loss
    on a fixed batch equals the fp32 one to bfloat16's precision, and Lightning's bf16 fit trains (MAE,
    DINO; the others' steps are the same two-view shape as DINO's global views)."""
    from cropssl.data.shards import read_shards
    from cropssl.schema import Batch

    batch = Batch.from_samples(read_shards(shards).select(np.arange(32)))
    losses = {}
    for precision in ("fp32", "bf16"):
        method = build(name).train()
        torch.manual_seed(1)  # the same views / masks in both
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = method.shared_step(batch)
        loss.backward()
        assert loss.dtype == torch.float32 and math.isfinite(float(loss)), precision
        grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads), precision
        losses[precision] = float(loss)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05, abs=1e-3)
    if name not in ("mae", "dino"):  # Lightning's bf16 fit: the reconstruction and the multi-crop method
        return
    method = build(name)
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    trainer = fit(method, shards, steps=3, precision="bf16-mixed")
    assert trainer.global_step == 3 and math.isfinite(float(trainer.callback_metrics["train/loss"]))
    after = method.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the encoder did not change"


class _LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_every_method_lowers_its_loss_on_real_shards(name, real_shards):
    """80 steps on the real WorldCereal shards: every loss finite, the last 20 below the first 20 on average.

    (DINO without the head's BatchNorm failed this: its loss rose towards ``log(out_dim)``, the uniform
    collapse where teacher and student both output the uniform distribution.)
    """
    method = build(name)
    rec = _LossRecorder()
    dm = PixelDataModule(str(real_shards), batch_size=64, shuffle_buffer=512, steps_per_epoch=40, seed=0)
    trainer = pl.Trainer(
        max_steps=80,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[rec],
    )
    trainer.fit(method, datamodule=dm)
    losses = np.array(rec.losses)
    assert len(losses) == 80 and np.isfinite(losses).all()
    first, last = losses[:20].mean(), losses[-20:].mean()
    assert last < first, f"{name}: mean loss of the last 20 steps {last:.4f} >= first 20 {first:.4f}"


def test_teacher_momentum_is_the_cosine_schedule_of_the_global_step():
    t = EMATeacher({"lin": torch.nn.Linear(2, 2)}, base_momentum=0.99)
    for k, total in [(0, 100), (25, 100), (50, 100), (100, 100), (150, 100)]:
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * min(k, total) / total) + 1) / 2  # BYOL, eq. (3)
        assert t.momentum(k, total) == pytest.approx(expected)


def test_ema_update_is_the_convex_combination():
    torch.manual_seed(0)
    student = {"lin": torch.nn.Linear(3, 2)}
    t = EMATeacher(student, base_momentum=0.9)
    old = {k: v.clone() for k, v in t["lin"].state_dict().items()}
    with torch.no_grad():
        student["lin"].weight.add_(1.0)
    t.update(student, momentum=0.75)
    for k, v in student["lin"].state_dict().items():
        torch.testing.assert_close(t["lin"].state_dict()[k], 0.75 * old[k] + 0.25 * v)


def test_teacher_updates_once_per_optimiser_step_under_gradient_accumulation(shards):
    method = build("byol", "method.schedule.total_steps=100")  # momentum < 1 at every step here
    seen: list[tuple[int, torch.Tensor]] = []

    class Record(pl.Callback):  # the teacher before every batch, and at the end
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.global_step, pl_module.teacher["encoder"].blocks[0].attn.qkv.weight.clone()))

        def on_train_end(self, trainer, pl_module):
            self.on_train_batch_start(trainer, pl_module, None, -1)

    dm = PixelDataModule(str(shards), batch_size=32, shuffle_buffer=64, steps_per_epoch=20)
    trainer = pl.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(method, datamodule=dm)
    # 6 batches, 3 optimiser steps: the teacher changes exactly on the batches that completed a step
    changed = [not torch.equal(a, b) for (_, a), (_, b) in itertools.pairwise(seen)]
    steps = [s for s, _ in seen]
    assert steps == [0, 0, 1, 1, 2, 2, 3]
    assert changed == [False, True, False, True, False, True]


def test_unknown_method_lists_the_valid_ones(tmp_path):
    proc = pretrain("method=simclrr", f"run_dir={tmp_path / 'r'}", check=False)
    assert proc.returncode == 2 and "Could not find 'method/simclrr'" in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("valid options:"))
    for name in METHODS:
        assert name in line


def test_two_view_method_with_a_one_view_config_fails_clearly():
    # Hydra wraps the method's ValueError; the user sees its message
    with pytest.raises(InstantiationException, match=r"simclr needs 2 global views .* use augment=default"):
        build("simclr", "augment=none")


def test_dino_local_views_need_longer_sequences(shards, tmp_path):
    short = tmp_path / "short"
    write_shards(make_samples(128, T=6, seed=8), short, samples_per_record=64)
    # windowed local views (4..6 months, off by default) would not be shorter than T=6
    method = build("dino", "augment.local_transform.transforms.window.p=1.0")
    with pytest.raises(ValueError, match=r"DINO local views need T > local_len .* got T=6, local_len=6"):
        fit(method, short, steps=1)


@pytest.mark.slow
def test_compare_families_multirun_writes_one_table(tmp_path):
    """`cropssl-pretrain -m experiment=compare_families` runs all seven methods and writes the table."""
    data = tmp_path / "sh"
    write_shards(make_samples(400, seed=9), data, samples_per_record=100)
    write_shards(make_samples(300, seed=10), tmp_path / "lab", samples_per_record=100)
    sweep = tmp_path / "sweep"
    tiny_all = [o for o in tiny("mae") if not o.startswith("method")]
    cmd = [
        sys.executable,
        "-m",
        "cropssl.cli.pretrain",
        "-m",
        "experiment=compare_families",
        *tiny_all,
        f"data.train={data}",
        "data.batch_size=32",
        "trainer.max_steps=4",
        f"callbacks.probe.labelled_shards={tmp_path / 'lab'}",
        "callbacks.probe.every_n_steps=2",
        "callbacks.health.every_n_steps=2",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    df = pd.read_csv(sweep / "compare.csv")
    assert sorted(df["method"]) == sorted(METHODS)
    assert df["final loss"].notna().all() and (df["steps"] == 4).all()
    for col in ["kNN macro-F1", "linear macro-F1", "RankMe", "samples/s", "train MMACs/sample"]:
        assert df[col].notna().all() and (df[col] > 0).all(), col
    # DINO's 6 views cost more per sample than SimCLR's 2 (same encoder)
    macs = df.set_index("method")["train MMACs/sample"]
    assert macs["dino"] > macs["simclr"]
    assert "| dino |" in (sweep / "compare.md").read_text()
    assert np.isfinite(df["wall time (s)"]).all()
    # every row says what the job ran (a sweep's parameters), without the bookkeeping overrides
    for method, ovr in zip(df["method"], df["overrides"], strict=True):
        assert f"method={method}" in ovr and "hydra.sweep" not in ovr and "data.train" not in ovr
    # cropssl-compare writes where it is asked, by default the current folder, never into a run
    from cropssl.cli.compare import main as compare_main

    runs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())[:2]
    (tmp_path / "cwd").mkdir()
    os.chdir(tmp_path / "cwd")
    try:
        assert compare_main([str(r) for r in runs]) == 0
    finally:
        os.chdir(ROOT)
    assert (tmp_path / "cwd" / "compare.md").exists() and not (runs[0] / "compare.md").exists()


def test_from_weights_continue_bundle_restores_heads_and_teacher_and_other_methods_take_the_encoder(
    shards, tmp_path
):
    from cropssl.checkpointing import init_from_weights
    from cropssl.export import export_encoder

    byol = build("byol", "method.schedule.total_steps=100")
    trainer = fit(byol, shards, steps=3)
    ckpt = tmp_path / "byol.ckpt"
    trainer.save_checkpoint(ckpt)
    export_encoder(ckpt, tmp_path / "export", formats=("safetensors",))
    saved = byol.state_dict()

    again = build("byol")  # a fresh BYOL continues from the bundle: every tensor comes back
    report = init_from_weights(again, str(tmp_path / "export"))
    assert report["continue_bundle"] and report["teacher_loaded"]
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0, msg=k)

    simclr = build("simclr")  # another method: the encoder loads (strict), the heads start fresh
    fresh_head = simclr.projector.layers[0].weight.clone()
    fresh_token = simclr.encoder.latlon_embed.weight.clone()
    report = init_from_weights(simclr, str(ckpt), strict=True)
    for k, v in simclr.encoder.state_dict().items():
        if not k.startswith("latlon_embed."):
            torch.testing.assert_close(v, saved[f"encoder.{k}"], rtol=0, atol=0, msg=k)
    assert not report["teacher_loaded"] and report["loaded"] and not report["ignored"]
    torch.testing.assert_close(simclr.projector.layers[0].weight, fresh_head)
    # BYOL's encoder has no lat/lon token (configs/location/): SimCLR's starts fresh, reported, not refused
    assert "latlon_embed." not in " ".join(saved) and report["initialised"] == [
        "encoder.latlon_embed.weight",
        "encoder.latlon_embed.bias",
    ]
    torch.testing.assert_close(simclr.encoder.latlon_embed.weight, fresh_token)
    # ... and the other way: SimCLR's token is left out of a BYOL encoder, strict or not
    simclr_ckpt = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": simclr.state_dict(), "cropssl": {"method": "simclr"}}, simclr_ckpt)
    report = init_from_weights(build("byol"), str(simclr_ckpt), strict=True)
    assert report["ignored"] == ["encoder.latlon_embed.weight", "encoder.latlon_embed.bias"]

    dino = build("dino")  # a teacher method from another method's weights: teacher = loaded student
    init_from_weights(dino, str(ckpt))
    for k, v in dino.encoder.state_dict().items():
        torch.testing.assert_close(dino.teacher["encoder"].state_dict()[k], v, rtol=0, atol=0)


def test_anchor_penalty_is_l2sp_and_layer_decay_groups(tmp_path):
    """L2-SP: anchor * sum ||theta - theta_0||^2 over the encoder (by hand), 0 at the start, survives a
    save / load; layer_decay gives the encoder's lower blocks smaller learning rates."""
    from cropssl.encoder import PixelTimeSeriesEncoder
    from cropssl.methods.simclr import SimCLR
    from cropssl.views import ViewGenerator

    enc = PixelTimeSeriesEncoder(d=32, depth=2, heads=4)
    m = SimCLR(enc, views=ViewGenerator(), proj_hidden=32, proj_dim=16, anchor=0.5,
               optimizer={"lr": 1e-3, "layer_decay": 0.5}, schedule={"total_steps": 10})  # fmt: skip
    m.set_anchor()
    assert m.has_anchor and float(m.anchor_penalty()) == 0.0
    start = {n: p.detach().clone() for n, p in enc.named_parameters()}
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1)
    expected = sum(((p - start[n]) ** 2).sum() for n, p in enc.named_parameters())
    torch.testing.assert_close(m.anchor_penalty(), expected)
    # the anchor is in the state dict: a fresh method loading it gets the same penalty
    sd = m.state_dict()
    m2 = SimCLR(PixelTimeSeriesEncoder(d=32, depth=2, heads=4), views=ViewGenerator(), proj_hidden=32,
                proj_dim=16, anchor=0.5)  # fmt: skip
    m2.on_load_checkpoint({"state_dict": sd})
    m2.load_state_dict(sd)
    torch.testing.assert_close(m2.anchor_penalty(), expected)
    # layer-wise lr decay: blocks.0 gets lr * 0.5^2, blocks.1 lr * 0.5, the projector lr
    opt = m.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(enc.blocks[0].attn.qkv.weight)] == pytest.approx(1e-3 * 0.25)
    assert lr_of[id(enc.blocks[1].attn.qkv.weight)] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(next(m.projector.parameters()))] == pytest.approx(1e-3)


def test_anchor_without_starting_weights_is_refused(tmp_path):
    proc = pretrain("method=mae", "method.anchor=0.1", f"run_dir={tmp_path / 'r'}", check=False)
    assert proc.returncode == 2 and "needs start=from_weights" in proc.stderr
