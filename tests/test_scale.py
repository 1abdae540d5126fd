"""Scale-out: DDP on CPU, multiruns with the basic / submitit launchers, Optuna sweeps, remote shards.

Real components throughout: Lightning DDP with gloo in real processes, real Hydra apps and sweepers,
webdataset shards served by a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cropssl.config import CONFIG_DIR, check_config
from cropssl.data.datamodule import PixelDataModule, PixelStream, make_loader, round_robin
from cropssl.data.remote import RemoteNotFoundError, RemoteReadError, fetch_bytes
from cropssl.data.shard_writer import write_shards
from cropssl.data.shards import ShardError, resolve_shards
from cropssl.train.run import check_objective
from cropssl.train.rundir import OVERRIDES_ENV, RUN_DIR_ENV, new_run_dir, rank_argv, run_dir_resolver
from tests.conftest import make_samples
from tests.test_methods import build
from tests.test_pretrain import TINY

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "sh"
    write_shards(make_samples(1200, seed=3), out, samples_per_record=100, records_per_shard=2)
    return out  # 6 shards of 200 samples


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale_lab") / "lab"
    write_shards(make_samples(300, seed=10), out, samples_per_record=100)
    return out


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; paths under /flaky/ answer 503; every request is counted."""

    counts: ClassVar[Counter] = Counter()

    def do_GET(self) -> None:
        type(self).counts[self.path] += 1
        if self.path.startswith("/flaky/"):
            self.send_error(503, "try again later")
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(shards: Path) -> Iterator[tuple[str, Counter]]:
    """An HTTP server on 127.0.0.1 serving the parent directory of the shards."""
    handler = functools.partial(_Handler, directory=str(shards.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.counts
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run_app(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    env.pop(RUN_DIR_ENV, None)
    env.pop(OVERRIDES_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "cropssl.cli.pretrain", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _compose(*overrides: str, hydra_cfg: bool = False):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("pretrain", overrides=list(overrides), return_hydra_config=hydra_cfg)


def _hparams_search(name: str) -> str:
    """The override selecting an hparams_search config (``+`` unless pretrain.yaml lists the group)."""
    defaults = yaml.safe_load((CONFIG_DIR / "pretrain.yaml").read_text())["defaults"]
    listed = any(isinstance(d, dict) and any("hparams_search" in str(k) for k in d) for d in defaults)
    return f"{'' if listed else '+'}hparams_search={name}"


#: Tiny runs without the method-specific head overrides (so several methods share one command line).
TINY_COMMON = [o for o in TINY if not o.startswith("method.")]


# ------------------------------------------------------------------------------------------------------
# DDP
# ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_cpu_ddp_run_writes_one_run_dir_and_one_checkpoint(shards, tmp_path):
    proc = _run_app(
        *TINY,
        f"data.train={shards}",
        "data.batch_size=32",
        "data.shuffle_buffer=64",
        "data.steps_per_epoch=4",
        "trainer.max_steps=6",
        "callbacks.checkpoint.every_n_train_steps=3",
        "trainer=ddp",
        "trainer.devices=2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # the second rank joined the first rank's run directory
    run = runs[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last-1.ckpt", "last.ckpt"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    # rank 0 alone wrote the config, the log file and the summary
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == [
        "loss_curve.png",
        "metrics.csv",
        "pretrain.log",
        "summary.json",
    ]
    assert (run / ".hydra" / "config.yaml").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["run_dir"] == str(run.resolve())
    steps = pd.read_csv(run / "metrics.csv")[["step", "train/loss"]].dropna()["step"]
    assert sorted(steps) == list(range(6))  # one logger, every step once


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_to_a_two_process_ddp_job_checkpoints_once_and_every_rank_exits_zero(shards, tmp_path, sig):
    """The signal goes to the whole job (process group, as Slurm does): every rank stops after the same
    completed step, one last.ckpt is written, all exit 0, and start=resume continues from that step."""
    import os
    import time

    from cropssl.checkpointing import load_checkpoint

    run = tmp_path / "run"
    common = [*TINY, f"data.train={shards}", "data.batch_size=32", "data.shuffle_buffer=64",
              "trainer=ddp", "trainer.devices=2", f"run_dir={run}",
              "method.schedule.total_steps=400"]  # fmt: skip
    cmd = [sys.executable, "-m", "cropssl.cli.pretrain", *common, "trainer.max_steps=400",
           "callbacks.checkpoint.every_n_train_steps=2"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    t0 = time.time()
    while not ckpt.exists() and time.time() - t0 < 240 and proc.poll() is None:
        time.sleep(0.1)
    assert ckpt.exists(), proc.communicate()[1][-3000:]
    time.sleep(1.0)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-4000:]
    stopped = load_checkpoint(ckpt)["global_step"]
    steps = re.findall(r"received SIG\w+ at step (\d+)", out + err)
    assert len(steps) == 2 and set(steps) == {str(stopped)}, (out + err)[-3000:]  # both ranks, one step
    assert 2 <= stopped < 400
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last-1.ckpt", "last.ckpt"]
    proc2 = _run_app(*common, "start=resume", f"trainer.max_steps={stopped + 4}", cwd=tmp_path)
    assert proc2.returncode == 0, proc2.stderr[-4000:]
    assert load_checkpoint(ckpt)["global_step"] == stopped + 4


def test_ddp_trainer_config_selects_gloo_on_cpu():
    cfg = _compose("trainer=ddp")
    check_config(cfg)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 2
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, pl.strategies.DDPStrategy)
    # null backend: Lightning picks gloo for CPU devices (nccl for CUDA)
    assert cfg.trainer.strategy.process_group_backend is None
    from lightning_fabric.utilities.distributed import _get_default_process_group_backend_for_device

    assert _get_default_process_group_backend_for_device(torch.device("cpu")) == "gloo"


def _ids(loader) -> list[str]:
    return [sid for b in loader for sid in b.meta["sample_id"]]


def test_ranks_and_workers_read_different_data_in_resampled_mode(shards):
    seen = []
    for rank in range(2):
        stream = PixelStream(shards, batch_size=50, shuffle_buffer=100, resampled=True, steps_per_epoch=6)
        stream.set_rank(rank, 2)
        seen.append(_ids(make_loader(stream, num_workers=2)))
    assert len(seen[0]) == len(seen[1]) == 300  # the same number of steps on every rank
    assert seen[0] != seen[1]


def test_without_resampling_every_rank_serves_the_same_number_of_batches(tmp_path):
    # 5 shards of unequal size: rank 0 gets 3 shards (300 + 100 + 50 samples), rank 1 gets 2 (250 + 75)
    sizes = [300, 250, 100, 75, 50]
    for i, n in enumerate(sizes):
        write_shards(make_samples(n, seed=20 + i), tmp_path / f"d{i}", samples_per_record=25)
    spec = [str(tmp_path / f"d{i}" / "shard-000000.tar") for i in range(5)]
    per_rank = []
    for rank in range(2):
        stream = PixelStream(spec, batch_size=40, shuffle_buffer=0, shuffle_shards=False, drop_last=True)
        stream.set_rank(rank, 2)
        per_rank.append(_ids(make_loader(stream, num_workers=2)))
    assert len(per_rank[0]) == len(per_rank[1]) == 7 * 40  # cut to the smaller rank (325 // 40 batches)
    assert not set(per_rank[0]) & set(per_rank[1])  # ranks read disjoint shards
    # fewer shards than ranks x workers: a clear error instead of a rank hanging at the epoch end
    stream = PixelStream(spec[:3], batch_size=40, shuffle_buffer=0)
    stream.set_rank(0, 2)
    with pytest.raises(ValueError, match=r"3 shard\(s\) cannot feed 2 rank\(s\) x 2 dataloader worker"):
        _ids(make_loader(stream, num_workers=2))
    # no manifest beside the shards: the sample counts (and so the epoch length) are unknown
    bare = tmp_path / "bare"
    bare.mkdir()
    for i in range(2):
        (bare / f"s{i}.tar").write_bytes((tmp_path / f"d{i}" / "shard-000000.tar").read_bytes())
    stream = PixelStream(str(bare / "*.tar"), batch_size=40, shuffle_buffer=0)
    stream.set_rank(1, 2)
    with pytest.raises(ValueError, match="needs the sample count of every shard.*resampled=true"):
        list(stream)


def test_round_robin_matches_the_dataloader_order():
    assert round_robin(7, [float("inf")] * 3) == [3, 2, 2]
    assert round_robin(7, [1, 10, 10]) == [1, 3, 3]
    assert round_robin(0, [2, 2]) == [0, 0]
    with pytest.raises(ValueError, match="cannot deal"):
        round_robin(5, [1, 1])


def test_ddp_ranks_started_by_lightning_rejoin_the_job(monkeypatch, tmp_path):
    overrides = ["method=simclr", "trainer=ddp", "data.train=/data/x"]
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "multirun" / "3_simclr"))
    monkeypatch.setenv(OVERRIDES_ENV, json.dumps(overrides))
    monkeypatch.setenv("LOCAL_RANK", "1")
    # Lightning re-runs the launcher's command line: a whole sweep (-m ...) plus its own hydra.run.dir
    argv = ["pretrain.py", "-m", "-cn", "other", "method=mae,simclr", "trainer=ddp", 'hydra.run.dir="runs/x"']
    new = rank_argv(argv)
    assert "-m" not in new and new[1:3] == ["-cn", "other"] and new[3:6] == overrides
    assert f'hydra.run.dir="{tmp_path}/multirun/3_simclr"' in new and "hydra.output_subdir=null" in new
    # the run-dir resolver gives the job's directory, never a new timestamped one
    assert run_dir_resolver(None, "runs", "mae") == str(tmp_path / "multirun" / "3_simclr")
    # the launching process (LOCAL_RANK 0) keeps its command line
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_argv(argv) == argv


def test_runs_starting_in_the_same_second_get_their_own_directories(tmp_path):
    a = new_run_dir(str(tmp_path / "runs"), "mae")
    b = new_run_dir(str(tmp_path / "runs"), "mae")
    assert a != b and Path(a).is_dir() and Path(b).is_dir()
    assert Path(b).name.startswith(Path(a).name)


# ------------------------------------------------------------------------------------------------------
# launchers and multiruns
# ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_multirun_of_two_methods_with_the_basic_launcher_writes_two_runs_and_a_table(shards, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _run_app(
        "-m",
        "method=mae,simclr",
        *TINY_COMMON,
        f"data.train={shards}",
        "data.batch_size=32",
        "trainer.max_steps=3",
        f"hydra.sweep.dir={sweep}",
        "+hydra.callbacks.compare._target_=cropssl.compare.CompareOnMultirunEnd",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == ["0_mae", "1_simclr"]
    for r in runs:
        assert (sweep / r / "checkpoints" / "last.ckpt").exists()
    df = pd.read_csv(sweep / "compare.csv")
    assert sorted(df["method"]) == ["mae", "simclr"] and (df["steps"] == 3).all()
    assert "| simclr |" in (sweep / "compare.md").read_text()
    assert not (tmp_path / "runs").exists()  # no stray single-run directory


def _sbatch_text(launcher_params: dict, folder: Path) -> str:
    """The sbatch script submitit would submit for these launcher parameters (no Slurm needed)."""
    from submitit.slurm import slurm

    params = {k: v for k, v in launcher_params.items() if k not in ("submitit_folder", "max_num_timeout")}
    eq = slurm.SlurmExecutor._equivalence_dict()
    sb = {eq.get(k, k): v for k, v in params.items()}
    sb["mem"] = slurm._convert_mem(sb["mem"])
    return slurm._make_sbatch_string(command="python -m cropssl.cli.pretrain", folder=folder, **sb)


def test_slurm_launcher_config_composes_with_requeue_signal_and_ddp_tasks(tmp_path):
    cfg = _compose(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.accelerator=gpu",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.timeout_min=600",
        hydra_cfg=True,
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    p = launcher.params
    assert p["partition"] == "gpu" and p["timeout_min"] == 600 and p["signal_delay_s"] == 90
    assert p["tasks_per_node"] == 4 and p["nodes"] == 2 and p["gpus_per_node"] == 4
    text = _sbatch_text(p, tmp_path)
    for line in (
        "#SBATCH --signal=USR1@90",
        "#SBATCH --partition=gpu",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=600",
    ):
        assert line in text, line
    # extra sbatch options pass through
    extra = "+hydra.launcher.additional_parameters.requeue=true"
    cfg = _compose("hydra/launcher=slurm", extra, hydra_cfg=True)
    assert "#SBATCH --requeue" in _sbatch_text(instantiate(cfg.hydra.launcher).params, tmp_path)


def test_submitit_local_launcher_config_composes():
    cfg = _compose("hydra/launcher=local", "hydra.launcher.timeout_min=5", hydra_cfg=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "LocalLauncher"
    assert launcher.params["timeout_min"] == 5 and launcher.params["tasks_per_node"] == 1
    assert str(launcher.params["submitit_folder"]).endswith(".submitit/%j")


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job_in_its_own_process(shards, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _run_app(
        "-m",
        "hydra/launcher=local",
        "method=mae,simclr",
        *TINY_COMMON,
        f"data.train={shards}",
        "data.batch_size=32",
        "trainer.max_steps=2",
        f"hydra.sweep.dir={sweep}",
        "+hydra.callbacks.compare._target_=cropssl.compare.CompareOnMultirunEnd",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "0_mae",
        "1_simclr",
    ]
    assert len(list((sweep / ".submitit").iterdir())) >= 2  # one submitit job folder per job
    assert sorted(pd.read_csv(sweep / "compare.csv")["method"]) == ["mae", "simclr"]


def test_unknown_launcher_is_a_clear_hydra_error():
    with pytest.raises(MissingConfigException) as err:
        _compose("hydra/launcher=slurmm", hydra_cfg=True)
    msg = str(err.value)
    assert "hydra/launcher" in msg and "slurmm" in msg
    for option in ("basic", "local", "slurm", "submitit_slurm"):
        assert option in msg


# ------------------------------------------------------------------------------------------------------
# sweeps
# ------------------------------------------------------------------------------------------------------
def test_hparams_search_configs_compose_and_pass_the_strict_checks():
    for name, direction in (("simclr_optuna", "maximize"), ("mae_optuna", "minimize")):
        cfg = _compose(_hparams_search(name), hydra_cfg=True)
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
        assert cfg.hydra.sweeper.direction == direction and cfg.hydra.sweeper.params
        assert "compare" in cfg.hydra.callbacks
        check_config(_compose(_hparams_search(name)))
    cfg = _compose(_hparams_search("simclr_optuna"))
    assert check_objective(cfg) == "monitor/knn_f1"
    # an objective no configured callback logs fails before any training
    with pytest.raises(ValueError, match="ProbeMonitor.*callbacks=monitors"):
        check_objective(_compose(_hparams_search("simclr_optuna"), "callbacks=default"))


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_reports_the_best_value(shards, labelled, tmp_path):
    sweep = tmp_path / "optuna"
    proc = _run_app(
        "-m",
        _hparams_search("simclr_optuna"),
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        *TINY_COMMON,
        "method.proj_hidden=64",
        "method.proj_dim=32",
        f"data.train={shards}",
        "data.batch_size=32",
        "data.shuffle_buffer=64",
        "trainer.max_steps=3",
        f"callbacks.probe.labelled_shards={labelled}",
        "callbacks.probe.every_n_steps=0",
        "callbacks.health.every_n_steps=0",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    summaries = [json.loads((sweep / r / "summary.json").read_text()) for r in ("0_simclr", "1_simclr")]
    values = [s["monitor/knn_f1"] for s in summaries]
    assert result["best_value"] == pytest.approx(max(values))  # maximised the kNN F1 the trials returned
    assert set(result["best_params"]) == {
        "method.optimizer.lr",
        "method.optimizer.weight_decay",
        "method.temperature",
    }
    assert len(pd.read_csv(sweep / "compare.csv")) == 2
    trial0 = OmegaConf.load(sweep / "0_simclr" / ".hydra" / "config.yaml")
    assert trial0.method.optimizer.lr != trial0.method.optimizer.weight_decay  # sampled, not the defaults


# ------------------------------------------------------------------------------------------------------
# remote shards
# ------------------------------------------------------------------------------------------------------
def _batches(spec, **kw) -> list:
    return list(PixelStream(spec, batch_size=64, shuffle_buffer=128, seed=1, **kw))


def test_http_shards_give_the_same_batches_and_training_as_local_files(shards, server, tmp_path):
    base, _ = server
    url_dir = f"{base}/{shards.name}/"
    assert resolve_shards(url_dir) == [f"{base}/{shards.name}/{Path(u).name}" for u in resolve_shards(shards)]
    for kw in ({}, {"resampled": True, "steps_per_epoch": 7}):
        local, remote = _batches(shards, **kw), _batches(url_dir, **kw)
        assert len(local) == len(remote) > 5
        for a, b in zip(local, remote, strict=True):
            assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask)
            assert list(a.meta["sample_id"]) == list(b.meta["sample_id"])
    # brace patterns of URLs and a local cache directory
    brace = f"{base}/{shards.name}/shard-{{000000..000005}}.tar"
    cached = _batches(brace, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").iterdir())) == 6
    assert all(torch.equal(a.x, b.x) for a, b in zip(cached, _batches(shards), strict=True))

    def train(spec: str) -> dict[str, torch.Tensor]:
        method = build("mae", "method.schedule.total_steps=10")
        method.set_seed(0)
        torch.manual_seed(0)
        dm = PixelDataModule(spec, batch_size=32, shuffle_buffer=64, steps_per_epoch=3, seed=2)
        pl.Trainer(
            max_steps=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        ).fit(method, datamodule=dm)
        return method.state_dict()

    a, b = train(str(shards)), train(url_dir)
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=0, atol=0, msg=k)


def test_a_missing_url_fails_at_once_naming_it(shards, server):
    base, counts = server
    url = f"{base}/{shards.name}/shard-000099.tar"
    with pytest.raises(ShardError, match=r"shard-000099\.tar not found \(HTTP 404"):
        _batches([url])
    assert counts[f"/{shards.name}/shard-000099.tar"] == 1  # a 404 is not retried
    with pytest.raises(RemoteNotFoundError, match="shard-000099.tar"):
        fetch_bytes(url)
    with pytest.raises(FileNotFoundError, match=r"no manifest.json at .*/nowhere/manifest.json \(HTTP 404\)"):
        resolve_shards(f"{base}/nowhere/")
    # skip_corrupt skips it like an unreadable local shard
    good = f"{base}/{shards.name}/shard-000000.tar"
    stream = PixelStream(
        [good, url], batch_size=50, shuffle_buffer=0, shuffle_shards=False, skip_corrupt=True
    )
    assert len(_ids(stream)) == 200 and stream.skipped_shards == [url]


def test_transient_errors_are_retried_a_bounded_number_of_times(server):
    base, counts = server
    url = f"{base}/flaky/shard-000000.tar"
    with pytest.raises(RemoteReadError, match=r"flaky/shard-000000\.tar after 3 attempt\(s\)"):
        fetch_bytes(url, retries=2, backoff=0.01)
    assert counts["/flaky/shard-000000.tar"] == 3
    with pytest.raises(ShardError, match=r"cannot fetch shard .*flaky/shard-000001\.tar"):
        list(PixelStream([f"{base}/flaky/shard-000001.tar"], batch_size=8, retries=0))
    assert counts["/flaky/shard-000001.tar"] == 1


def test_pipe_urls_read_through_webdataset(shards):
    spec = f"pipe:cat {shards}/shard-{{000000..000001}}.tar"
    assert len(resolve_shards(spec)) == 2
    assert [b.x.shape[0] for b in _batches(spec)] == [64] * 6 + [16]
    with pytest.raises(ShardError, match="exit"):
        _batches([f"pipe:cat {shards}/nope.tar"], retries=0)


def test_slurm_templates_and_readme_exist():
    for name in ("pretrain.sbatch", "sweep.sbatch", "README.md"):
        assert (ROOT / "slurm" / name).exists(), name
    text = (ROOT / "slurm" / "pretrain.sbatch").read_text()
    assert "--signal=SIGUSR1@90" in text and "--requeue" in text and "start=resume" in text
    for name in ("pretrain.sbatch", "sweep.sbatch"):  # valid bash
        subprocess.run(["bash", "-n", str(ROOT / "slurm" / name)], check=True)
