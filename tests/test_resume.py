"""Start modes, exact resume, signals, atomic checkpoints and lineage (real Lightning + Hydra runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cropssl.checkpointing import AtomicCheckpointIO, init_from_weights, load_checkpoint
from cropssl.cli.lineage import main as lineage_main
from cropssl.data.shard_writer import write_shards
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.methods.mae import MAE
from cropssl.schema import Batch
from tests.conftest import PRESTO, make_samples, require_shared
from tests.test_pretrain import TINY, pretrain, tiny

DETERMINISTIC_EXTRA = [
    "trainer.deterministic=true",
    "data.shuffle_buffer=128",
    "method.schedule.total_steps=40",
]
DETERMINISTIC = [*TINY, *DETERMINISTIC_EXTRA]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "sh"
    write_shards(make_samples(3000, seed=4), out, samples_per_record=100, records_per_shard=3)
    return out


def _popen(*overrides: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-m", "cropssl.cli.pretrain", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _step_of(ckpt: Path) -> int:
    try:
        return int(load_checkpoint(ckpt)["global_step"])
    except Exception:
        return -1


def _wait_for_step(ckpt: Path, proc: subprocess.Popen, step: int, timeout: float = 120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ckpt.exists() and (s := _step_of(ckpt)) >= step:
            return s
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for a checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mae", "dino"])
def test_sigkill_and_resume_gives_the_weights_of_an_uninterrupted_run(shards, tmp_path, method):
    """For MAE and for a teacher method (DINO: EMA teacher, its center buffer, multi-crop views)."""
    common = [
        *tiny(method),
        *DETERMINISTIC_EXTRA,
        f"data.train={shards}",
        "data.steps_per_epoch=15",
        "trainer.max_steps=40",
    ]
    pretrain(*common, f"run_dir={tmp_path / 'straight'}", "callbacks.checkpoint.every_n_train_steps=5")
    killed = tmp_path / "killed"
    proc = _popen(*common, f"run_dir={killed}", "callbacks.checkpoint.every_n_train_steps=5")
    at = _wait_for_step(killed / "checkpoints" / "last.ckpt", proc, 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 10 <= at < 40
    pretrain(*common, f"run_dir={killed}", "start=resume", "callbacks.checkpoint.every_n_train_steps=5")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 40
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0, msg=k)
    # the optimiser state and the schedule position match too
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]
    if method == "dino":  # the teacher and the DINO center were saved and restored
        assert any(k.startswith("teacher.ema.module.encoder.") for k in a["state_dict"])
        assert "loss_fn.center" in a["state_dict"] and a["state_dict"]["loss_fn.center"].abs().sum() > 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_writes_checkpoint_exits_zero_and_resume_continues(shards, tmp_path, sig):
    run = tmp_path / "run"
    common = [*TINY, f"data.train={shards}", f"run_dir={run}", "method.schedule.total_steps=400"]
    proc = _popen(*common, "trainer.max_steps=400", "callbacks.checkpoint.every_n_train_steps=3")
    _wait_for_step(run / "checkpoints" / "last.ckpt", proc, 3)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    stopped = ckpt["global_step"]
    assert 3 <= stopped < 400
    pretrain(*common, "start=resume", f"trainer.max_steps={stopped + 5}")
    after = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert after["global_step"] == stopped + 5
    assert after["lr_schedulers"][0]["last_epoch"] == stopped + 5  # the schedule continued, not restarted
    steps = pd.read_csv(run / "metrics.csv")["step"].dropna()
    assert steps.max() >= stopped  # the same metrics file, continued


class _Boom:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000), "x": _Boom()}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.ckpt"
    script = f"""
import torch
from cropssl.checkpointing import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({{"global_step": 1}}, {str(path)!r})
print("first", flush=True)
io.save_checkpoint({{"global_step": 2, "w": torch.randn(60_000_000)}}, {str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "first"
    t0 = time.time()
    while not any(".tmp" in p.name for p in tmp_path.iterdir()) and time.time() - t0 < 60:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert torch.load(path, weights_only=True)["global_step"] == 1


def _mae(**enc) -> MAE:
    return MAE(PixelTimeSeriesEncoder(**enc), decoder_dim=32, decoder_depth=1, decoder_heads=4)


def test_from_weights_presto_reproduces_reference_embeddings():
    require_shared(PRESTO / "default_model.pt")
    ref = np.load(PRESTO / "reference_embeddings.npz")
    method = _mae()
    report = init_from_weights(method, str(PRESTO / "default_model.pt"))
    assert report["kind"] == "presto" and not report["missing"]
    T = ref["x_normalized"].shape[1]
    batch = Batch(
        x=torch.from_numpy(ref["x_normalized"]),
        mask=torch.from_numpy(ref["mask"].astype(bool)),
        month=torch.from_numpy((ref["start_month"][:, None] + np.arange(T)) % 12),
        latlon=torch.from_numpy(ref["latlon"]),
        dynamic_world=torch.from_numpy(ref["dynamic_world"]),
        label=torch.full((len(ref["x_normalized"]),), -1),
    )
    with torch.no_grad():
        emb = method.encoder.eval()(batch).numpy()
    assert np.abs(emb - ref["embedding"]).max() < 1e-4


def test_from_weights_presto_run_rewarms_the_schedule(shards, tmp_path):
    require_shared(PRESTO / "default_model.pt")
    run = tmp_path / "run"
    pretrain(
        *[o for o in TINY if not o.startswith("encoder=")],
        f"data.train={shards}",
        f"run_dir={run}",
        "trainer.max_steps=3",
        "start=from_weights",
        f"start.source={PRESTO / 'default_model.pt'}",
        "method.schedule.warmup_steps=20",
        "method.optimizer.lr=1e-3",
    )
    lr = pd.read_csv(run / "metrics.csv").filter(like="lr-").dropna(how="all").iloc[0].dropna().iloc[0]
    assert lr == pytest.approx(1e-3 / 20)  # step 0 of a fresh warmup
    chain = load_checkpoint(run / "checkpoints" / "last.ckpt")["cropssl"]["lineage"]
    assert chain[-1]["start_mode"] == "from_weights" and chain[-1]["parent"]["kind"] == "presto"


def test_strict_mismatch_names_keys_and_non_strict_reports_new_groups(tmp_path):
    big = _mae(d=64, depth=1, heads=4)
    ckpt = tmp_path / "big.ckpt"
    torch.save({"state_dict": big.state_dict(), "cropssl": {"encoder_config": big.encoder.config}}, ckpt)
    with pytest.raises(ValueError, match=r"eo_patch_embed\.S1\.weight"):
        init_from_weights(_mae(d=32, depth=1, heads=4), str(ckpt))
    s2_groups = ["S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR", "ERA5", "SRTM", "NDVI"]
    small = _mae(d=32, depth=1, heads=4, groups=s2_groups)
    torch.save({"state_dict": small.state_dict(), "cropssl": {"encoder_config": small.encoder.config}}, ckpt)
    target = _mae(d=32, depth=1, heads=4)
    report = init_from_weights(target, str(ckpt), strict=False)
    assert report["new_groups"] == ["S1"]
    assert "encoder.eo_patch_embed.S1.weight" in report["initialised"]
    torch.testing.assert_close(
        target.encoder.eo_patch_embed["S2_RGB"].weight, small.encoder.eo_patch_embed["S2_RGB"].weight
    )
    # channel-embedding rows follow their group names: S2_RGB is row 0 in the source, row 1 here
    torch.testing.assert_close(target.encoder.channel_embed.weight[1], small.encoder.channel_embed.weight[0])


def test_from_weights_missing_source_and_lineage_cli(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        init_from_weights(_mae(d=32, depth=1, heads=4), str(tmp_path / "nope.ckpt"))
    assert lineage_main([str(tmp_path / "nope.ckpt")]) == 2


def test_saves_keep_the_previous_checkpoint_and_a_truncated_one_is_named_on_resume(shards, tmp_path):
    """Every save keeps the checkpoint it replaces as last-1.ckpt; resuming from a truncated last.ckpt fails
    naming it and the intact last-1.ckpt, and start.checkpoint=last-1.ckpt resumes from that one."""
    run = tmp_path / "run"
    pretrain(*TINY, f"data.train={shards}", f"run_dir={run}", "trainer.max_steps=20")
    last, prev = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last-1.ckpt"
    assert load_checkpoint(last)["global_step"] == 20 and load_checkpoint(prev)["global_step"] == 10
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    proc = pretrain(
        *TINY, f"data.train={shards}", f"run_dir={run}", "start=resume", "trainer.max_steps=30", check=False
    )
    assert proc.returncode != 0
    assert (
        "last.ckpt is truncated or corrupt" in proc.stderr and "start.checkpoint=last-1.ckpt" in proc.stderr
    )
    pretrain(
        *TINY,
        f"data.train={shards}",
        f"run_dir={run}",
        "start=resume",
        "start.checkpoint=last-1.ckpt",
        "trainer.max_steps=30",
    )
    assert load_checkpoint(last)["global_step"] == 30
    # the lineage records the resume: when, from which checkpoint and step
    assert lineage_main([str(last)]) == 0


def test_lineage_records_resumes(shards, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(*TINY, f"data.train={shards}", f"run_dir={run}", "trainer.max_steps=10")
    pretrain(*TINY, f"data.train={shards}", f"run_dir={run}", "start=resume", "trainer.max_steps=20")
    chain = load_checkpoint(run / "checkpoints" / "last.ckpt")["cropssl"]["lineage"]
    assert chain[-1]["start_mode"] == "fresh" and chain[-1]["steps"] == 20
    assert [(r["from_step"], r["checkpoint"]) for r in chain[-1]["resumes"]] == [(10, "last.ckpt")]
    assert lineage_main([str(run / "checkpoints" / "last.ckpt")]) == 0
    assert "resumed at step 10 from last.ckpt" in capsys.readouterr().out
