"""Smoke test of the learnability protocol (experiments/ssl_quality/run.py): tiny encoder, few steps."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import ROOT


def _load():
    spec = importlib.util.spec_from_file_location("ssl_quality_run", ROOT / "experiments/ssl_quality/run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_bootstrap_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    run = _load()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    a = np.where(rng.random(300) < 0.7, y, rng.integers(0, 7, 300))
    b = np.where(rng.random(300) < 0.4, y, rng.integers(0, 7, 300))
    full = np.arange(300)[None]
    for p in (a, b):
        assert run.macro_f1_resampled(y, p, full)[0] == pytest.approx(
            f1_score(y, p, labels=np.unique(y), average="macro")
        )
    d = run.paired_bootstrap(y, a, b, n_boot=300, seed=0)
    assert d["low"] < d["delta"] < d["high"] and d["low"] > 0  # a is clearly better
    same = run.paired_bootstrap(y, a, a, n_boot=100, seed=0)
    assert same["low"] == same["high"] == same["delta"] == 0


@pytest.mark.slow
def test_protocol_smoke(tmp_path):
    run = _load()
    doc = run.main(
        [
            "--out", str(tmp_path), "--methods", "mae,simclr", "--steps", "12", "--batch-size", "32",
            "--pixels", "1500", "--eval-pixels", "1200", "--probe-every", "6", "--n-boot", "50",
            "--encoder", "encoder.d=32", "encoder.heads=4", "encoder.depth=1", "encoder.mlp_ratio=2",
        ]
    )  # fmt: skip
    assert set(doc["results"]["splits"]) == {"random", "held-out east_africa"}
    for split in doc["results"]["splits"].values():
        assert set(split["encoders"]) == {"raw features", "random init", "mae", "simclr"}
        for res in split["encoders"]["mae"]:
            assert 0 <= res["logreg"]["macro_f1"] <= 1 and "vs_random" in res["knn"]
    assert set(doc["curves"]) == {"mae", "simclr"} and doc["curves"]["mae"]["monitor/knn_f1"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["args"]["steps"] == 12
    assert "| mae |" in (tmp_path / "table.md").read_text()
