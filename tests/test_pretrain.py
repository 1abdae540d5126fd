"""The pre-training app end to end: real Hydra, real Lightning, real shards (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from cropssl.config import CONFIG_DIR, ConfigKeyError, check_config

#: Small heads per method, so every method runs in seconds on a CPU.
METHOD_TINY: dict[str, list[str]] = {
    "mae": ["method.decoder_dim=32", "method.decoder_depth=1", "method.decoder_heads=4"],
    "simclr": ["method.proj_hidden=64", "method.proj_dim=32"],
    "mocov3": ["method.proj_hidden=64", "method.proj_dim=32"],
    "byol": ["method.proj_hidden=64", "method.proj_dim=32"],
    "dino": ["method.out_dim=64", "method.hidden_dim=64", "method.bottleneck_dim=16"],
    "barlow": ["method.proj_hidden=64", "method.proj_dim=64"],
    "vicreg": ["method.proj_hidden=64", "method.proj_dim=64"],
}


def tiny(method: str) -> list[str]:
    """Overrides for a tiny, fast run of ``method``."""
    return [f"method={method}", *(o for o in TINY if not o.startswith("method.")), *METHOD_TINY[method]]


TINY = [
    "encoder=tiny",
    *METHOD_TINY["mae"],
    "data.batch_size=64",
    "data.shuffle_buffer=256",
    "callbacks.checkpoint.every_n_train_steps=10",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def pretrain(*overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run cropssl-pretrain in a subprocess (real Hydra app) and return the finished process."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "cropssl.cli.pretrain", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _losses(run_dir: Path) -> pd.Series:
    df = pd.read_csv(run_dir / "metrics.csv")
    return df[["step", "train/loss"]].dropna().set_index("step")["train/loss"]


def test_mae_pretrains_on_real_shards_and_resumes(real_shards, tmp_path):
    run = tmp_path / "run"
    pretrain(
        *TINY,
        f"data.train={real_shards}",
        "trainer.max_steps=40",
        f"run_dir={run}",
        "method.schedule.total_steps=60",
        "method.optimizer.lr=2e-3",
    )
    loss = _losses(run)
    assert len(loss) >= 35 and loss.notna().all()
    assert loss.iloc[-8:].mean() < 0.8 * loss.iloc[:5].mean()  # it learns
    summary = json.loads((run / "summary.json").read_text())
    assert summary["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert (run / "loss_curve.png").stat().st_size > 1000
    assert (run / ".hydra" / "config.yaml").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 40
    assert ckpt["cropssl"]["method"] == "mae" and ckpt["cropssl"]["encoder_config"]["d"] == 32
    lr_at_40 = ckpt["lr_schedulers"][0]["_last_lr"][0]
    # resume the same run to step 60: the step count and the schedule continue
    pretrain(
        *TINY,
        f"data.train={real_shards}",
        "trainer.max_steps=60",
        f"run_dir={run}",
        "start=resume",
        "method.schedule.total_steps=60",
        "method.optimizer.lr=2e-3",
    )
    ckpt2 = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt2["global_step"] == 60
    steps = _losses(run).index
    assert steps.max() == 59 and steps.min() == 0  # one metrics file, continued
    assert ckpt2["lr_schedulers"][0]["_last_lr"][0] < lr_at_40


def test_resume_without_checkpoint_fails_loudly(tmp_path, real_shards):
    proc = pretrain(
        *TINY, f"data.train={real_shards}", f"run_dir={tmp_path / 'nothing'}", "start=resume", check=False
    )
    assert proc.returncode != 0
    assert "last.ckpt does not exist" in proc.stderr


def test_config_typo_on_command_line_fails_naming_the_key(tmp_path):
    proc = pretrain("trainer.max_step=5", f"run_dir={tmp_path / 'r'}", check=False)
    assert (
        proc.returncode == 2
        and "unknown config key 'trainer.max_step'. Did you mean 'max_steps'" in proc.stderr
    )
    assert "+trainer.max_step" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_typo_inside_a_nested_key_is_named_with_the_names_that_exist(tmp_path):
    """The unknown key is a parent of the override's (``transforms.windw`` of ``transforms.windw.p``), and
    the old positional form of a view transform (``transforms.0``) gets the names instead of a traceback."""
    for typo, hint in (("windw", "Did you mean 'window'?"), ("0", "'latlon_jitter', 'noise'")):
        key = f"augment.global_transform.transforms.{typo}"
        proc = pretrain("method=byol", f"{key}.p=0.5", f"run_dir={tmp_path / typo}", check=False)
        assert proc.returncode == 2 and f"unknown config key '{key}'." in proc.stderr, proc.stderr
        assert hint in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / typo).exists()


def test_user_errors_print_one_line_and_leave_no_run_dir(tmp_path):
    """A failed start (here: missing shards) says what is wrong in one line, without Hydra's 'Error executing
    job' and a traceback, and removes the run directory it had created; HYDRA_FULL_ERROR=1 shows the trace."""
    env_cwd = tmp_path / "cwd"
    env_cwd.mkdir()
    cmd = [sys.executable, "-m", "cropssl.cli.pretrain", *TINY, f"data.train={tmp_path / 'none'}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=env_cwd, env=env, timeout=300)
    assert proc.returncode == 2
    assert "cropssl-pretrain: error: shard(s) not found" in proc.stderr
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    assert not any((env_cwd / "runs").glob("*")), list((env_cwd / "runs").glob("*"))
    env["HYDRA_FULL_ERROR"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=env_cwd, env=env, timeout=300)
    assert "Traceback" in proc.stderr


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("pretrain", overrides=list(overrides))


def test_config_typo_added_in_yaml_fails_with_suggestion():
    cfg = _compose("+encoder.dpth=3")
    with pytest.raises(ConfigKeyError, match=r"encoder.dpth.*Did you mean 'depth'"):
        check_config(cfg)
    cfg = _compose("+method.mask_ration=0.5")
    with pytest.raises(ConfigKeyError, match="mask_ratio"):
        check_config(cfg)
    cfg = _compose("+sed=1")
    with pytest.raises(ConfigKeyError, match="'sed'.*'seed'"):
        check_config(cfg)


def test_missing_shards_error_names_them(tmp_path):
    proc = pretrain(*TINY, f"data.train={tmp_path / 'nope-*.tar'}", f"run_dir={tmp_path / 'r'}", check=False)
    assert proc.returncode != 0 and "no shards match" in proc.stderr


def test_default_config_composes_and_passes_checks():
    cfg = _compose()
    check_config(cfg)
    assert cfg.method._target_ == "cropssl.methods.mae.MAE"


def test_console_is_free_of_library_noise(tmp_path, real_shards):
    """A run's console shows its own lines (run dir, parameters, MACs, a step progress bar) and none of the
    notices that say nothing about it (each was printed before: deprecations, empty-list, hook notices,
    adverts, eval-mode modules of the teacher, FLOPs: 0, 'Epoch 0/-2')."""
    over = [o for o in tiny("byol") if o != "trainer.enable_progress_bar=false"]
    proc = pretrain(*over, f"data.train={real_shards}", f"run_dir={tmp_path / 'r'}", "trainer.max_steps=3")
    text = proc.stdout + proc.stderr
    for noise in ("LeafSpec", "Total length of", "transfer_batch_to_device", "litlogger", "in eval mode",
                  "Total FLOPs", "/-2", "validation_step"):  # fmt: skip
        assert noise not in text, noise
    assert "MMACs per pixel" in text and "Epoch 0" in text
