"""Online health monitors: metrics against independent references, collapse detection, missing data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier

from cropssl.callbacks.monitors import EmbeddingHealth, ProbeMonitor, embedding_std, knn_majority_vote, rankme
from cropssl.data.datamodule import PixelDataModule
from cropssl.data.shard_writer import write_shards
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.methods.simclr import SimCLR
from cropssl.views import Compose, GaussianNoise, MultiplicativeJitter, ViewGenerator
from tests.conftest import make_samples


def test_rankme_matches_the_papers_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 8)) @ np.diag([5, 4, 3, 2, 1, 0.5, 0.1, 0.01])
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert rankme(np.outer(rng.normal(size=40), rng.normal(size=6))) == pytest.approx(1.0, abs=1e-4)
    q, _ = np.linalg.qr(rng.normal(size=(30, 6)))  # 6 equal singular values
    assert rankme(q) == pytest.approx(6.0, rel=1e-5)


def test_embedding_std_by_hand():
    z = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    n = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert embedding_std(z) == pytest.approx(n.std(axis=0).mean())
    assert embedding_std(np.tile([1.0, 2.0, 3.0], (10, 1))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_scikit_learn(k):
    rng = np.random.default_rng(1)
    tr, te = rng.normal(size=(200, 16)), rng.normal(size=(80, 16))
    y = (tr[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)  # 2 classes, odd k: no vote ties
    ref = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(tr, y).predict(te)
    got = knn_majority_vote(torch.from_numpy(tr), torch.from_numpy(y), torch.from_numpy(te), k=k).numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("mon")
    write_shards(make_samples(512, seed=3), out / "train", samples_per_record=64)
    write_shards(make_samples(300, seed=4), out / "labelled", samples_per_record=64)
    return out


def _encoder() -> PixelTimeSeriesEncoder:
    torch.manual_seed(0)
    return PixelTimeSeriesEncoder(d=32, depth=1, heads=4, mlp_ratio=2.0)


def _views() -> ViewGenerator:
    return ViewGenerator(
        n_global=2, global_transform=Compose([MultiplicativeJitter(0.1, p=1.0), GaussianNoise(0.1, p=1.0)])
    )


class AlignOnlySimCLR(SimCLR):
    """SimCLR without its negatives (positive-pair term only, on the embeddings): a loss that keeps falling
    as every pixel is mapped to the same point."""

    def shared_step(self, batch):
        h0, h1 = self.encode_views(self.make_views(batch)[:2])
        z0, z1 = F.normalize(h0, dim=1), F.normalize(h1, dim=1)
        return -(z0 * z1).sum(1).mean() / self.loss_fn.temperature, {}


def _fit(method, shards, steps=30):
    health = EmbeddingHealth(str(shards / "labelled"), every_n_steps=15, max_samples=256)
    dm = PixelDataModule(str(shards / "train"), batch_size=32, shuffle_buffer=128, steps_per_epoch=20)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[health],
        accelerator="cpu",
    )
    trainer.fit(method, datamodule=dm)
    return health.history


@pytest.mark.slow
def test_collapse_shows_in_the_monitors_while_the_loss_falls(tiny_shards):
    opt = {"lr": 3e-3, "weight_decay": 0.0}
    healthy = _fit(SimCLR(_encoder(), _views(), proj_hidden=64, proj_dim=32, optimizer=opt), tiny_shards)
    collapsing = _fit(
        AlignOnlySimCLR(_encoder(), _views(), proj_hidden=64, proj_dim=32, optimizer=opt), tiny_shards
    )
    assert healthy[0]["monitor/rankme"] == pytest.approx(collapsing[0]["monitor/rankme"])  # same start
    # without negatives the embeddings shrink to a point: spread and effective rank fall far below
    assert collapsing[-1]["monitor/emb_std"] < 0.5 * healthy[-1]["monitor/emb_std"]
    assert collapsing[-1]["monitor/rankme"] < 0.7 * healthy[-1]["monitor/rankme"]
    assert collapsing[-1]["monitor/emb_std"] < 0.5 * collapsing[0]["monitor/emb_std"]


def test_probe_monitor_without_labelled_data_disables_itself_and_training_continues(tiny_shards, tmp_path):
    write_shards(make_samples(100, seed=5, labelled=False), tmp_path / "unlabelled", samples_per_record=50)
    probe = ProbeMonitor(str(tmp_path / "unlabelled"), every_n_steps=2)
    missing = EmbeddingHealth(str(tmp_path / "does_not_exist"), every_n_steps=2)
    dm = PixelDataModule(str(tiny_shards / "train"), batch_size=32, shuffle_buffer=64, steps_per_epoch=5)
    trainer = pl.Trainer(
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe, missing],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(SimCLR(_encoder(), _views(), proj_hidden=32, proj_dim=16), datamodule=dm)
    assert trainer.global_step == 5
    assert not probe.enabled and not missing.enabled and probe.history == [] == missing.history
    text = " ".join(str(w.message) for w in caught)
    assert "holds no labels" in text and "training continues without them" in text
    assert "cannot read the shards" in text


class LatLonEncoder(torch.nn.Module):
    """An "encoder" whose embedding is the pixel's offset from (45 N, 5 E)."""

    def forward(self, batch):
        return batch.latlon.float() - torch.tensor([45.0, 5.0])


class ConstantEncoder(torch.nn.Module):
    """A fully collapsed encoder."""

    def forward(self, batch):
        return torch.ones(len(batch), 4)


def test_probe_monitor_separates_what_the_embedding_encodes_and_not_a_collapsed_one(tmp_path):
    s = make_samples(400, seed=6)
    s.label = np.where(s.latlon[:, 0] > 45, 1101010001, 1201000010)  # north / south of 45 N
    write_shards(s, tmp_path / "sep", samples_per_record=100)
    probe = ProbeMonitor(str(tmp_path / "sep"), every_n_steps=0, k=5)
    probe.prepare()
    north = (s.latlon[:, 0] > 45).mean()
    assert len(probe.test_y) == 120  # stratified: the test part has the overall class ratio
    assert abs((probe.classes[probe.test_y.numpy()] == 1101010001).sum() - 120 * north) <= 1
    good = probe.compute(probe._embed_fn(LatLonEncoder(), torch.device("cpu"), 256))
    assert good["monitor/knn_f1"] > 0.9 and good["monitor/linear_f1"] > 0.9
    bad = probe.compute(probe._embed_fn(ConstantEncoder(), torch.device("cpu"), 256))
    assert bad["monitor/knn_f1"] <= 0.5 and bad["monitor/linear_f1"] <= 0.5  # one class for everything
