"""`cropssl-demo` end to end (tiny settings): real files when present, the synthetic generator otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WORLDCEREAL, require_shared
from tests.test_pretrain import TINY

FAST = [o for o in TINY if not o.startswith("callbacks.checkpoint")] + [
    "callbacks.probe.every_n_steps=2",
    "callbacks.health.every_n_steps=2",
]


def demo(tmp_path: Path, data: Path, pixels: int = 3000) -> str:
    cmd = [sys.executable, "-m", "cropssl.cli.demo", "--data", str(data), "--work", str(tmp_path / "work")]
    cmd += ["--steps", "4", "--pixels", str(pixels), *FAST]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_demo_falls_back_to_synthetic_data_and_says_so(tmp_path):
    out = demo(tmp_path, tmp_path / "no_such_folder")
    assert "using SYNTHETIC data" in out.splitlines()[1] or "using SYNTHETIC data" in out
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and Path(summary["checkpoint"]).exists()
    assert "monitor/knn_f1" in summary and "kNN macro-F1" in out
    manifest = json.loads((tmp_path / "work" / "shards" / "synthetic_pretrain" / "manifest.json").read_text())
    assert manifest["num_samples"] == 3000 and manifest["sources"] == ["cropssl-synth"]


def test_demo_uses_the_real_files_when_present(tmp_path):
    require_shared(WORLDCEREAL)
    out = demo(tmp_path, WORLDCEREAL)
    assert "using REAL data" in out
    assert "run dir:" in out and "loss curve:" in out and "checkpoint:" in out
    # the gain of pre-training next to a random-init encoder and Presto, on the same probe and pixels
    assert "what pre-training did" in out
    for row in ("this run (pre-trained)", "random init, same encoder", "Presto (published weights)"):
        line = next(x for x in out.splitlines() if row in x)
        assert "kNN 0." in line and "linear 0." in line
    manifest = json.loads((tmp_path / "work" / "shards" / "real_pretrain" / "manifest.json").read_text())
    assert manifest["num_samples"] == 11_000
