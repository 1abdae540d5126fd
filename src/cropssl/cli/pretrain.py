"""``cropssl-pretrain``: the Hydra app that pre-trains an encoder with any SSL method.

Examples::

    cropssl-pretrain                                  # MAE on the demo shards
    cropssl-pretrain method=mae trainer.max_steps=100 data.train=work/shards/pretrain
    cropssl-pretrain start=resume run_dir=runs/2026-11-25_10-00-00_mae
    cropssl-pretrain trainer=ddp trainer.devices=2          # 2 DDP processes (gloo on CPU), one run dir
    cropssl-pretrain -m hparams_search=simclr_optuna       # Optuna sweep; returns ``objective``

Distributed runs: with ``trainer=ddp`` Lightning starts the other ranks by running this app again. The
launching process hands them its run directory and its overrides (environment variables), so every rank
joins the same run and only rank 0 writes configs, logs, summaries and checkpoints. Under ``srun`` (one
task per device) each task runs the app: pass ``run_dir=`` (the sbatch templates in ``slurm/`` do), else
the tasks agree on ``runs/slurm-<job>.<step>_<name>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cropssl.config import CONFIG_DIR, check_config

log = logging.getLogger("cropssl.pretrain")


class _NoAdverts(logging.Filter):
    """Drop Lightning's installation tips (the litlogger advert) from the run's console and log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_libraries() -> None:
    """Silence library notices that say nothing about the run (precisely: by message)."""
    import warnings

    # torch 2.14 deprecates LeafSpec; Lightning 2.6 still uses it internally
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoAdverts())


#: Set by the process that launches DDP ranks, for the ranks Lightning starts (they re-run this app):
#: the run directory of the job and its overrides (JSON list).
RUN_DIR_ENV = "CROPSSL_RUN_DIR"
OVERRIDES_ENV = "CROPSSL_TASK_OVERRIDES"
#: Environment variables Lightning's DDP launcher sets in the launching process (removed after the job so
#: the next job of a multirun starts its own processes on a new port).
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: Run directories this process has chosen, per (root, name): Hydra may evaluate ``hydra.run.dir`` twice.
_CHOSEN_RUN_DIRS: dict[tuple[str, str], str] = {}


def _in_multitask_srun() -> bool:
    """Inside an ``srun`` step of several tasks (each task runs this app)."""
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def _new_run_dir(root: str, name: str) -> str:
    """``<root>/<timestamp>_<name>``, created here; a suffix ``_1``, ``_2``... if another run has it."""
    if os.environ.get("SLURM_JOB_ID") and _in_multitask_srun():  # the tasks must agree without talking
        return f"{root}/slurm-{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}_{name}"
    base = f"{root}/{datetime.now():%Y-%m-%d_%H-%M-%S}_{name}"
    Path(root).mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        candidate = base if i == 0 else f"{base}_{i}"
        try:
            Path(candidate).mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run directory {base}_<n> in {root}")


def _run_dir_resolver(run_dir: Any, root: str, name: str) -> str:
    if run_dir not in (None, "", "None", "null"):
        return str(run_dir)
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:  # a DDP rank started by the launching process (or that process during its job)
        return inherited
    key = (str(root), str(name))
    if key not in _CHOSEN_RUN_DIRS:
        _CHOSEN_RUN_DIRS[key] = _new_run_dir(str(root), str(name))
    return _CHOSEN_RUN_DIRS[key]


OmegaConf.register_new_resolver("cropssl_run_dir", _run_dir_resolver, replace=True)


def resolve_start(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint Lightning resumes from, per the start mode (``None`` unless ``resume``).

    Raises:
        FileNotFoundError: a resume was requested but the run has no ``checkpoints/last.ckpt``.
        CheckpointError: the checkpoint is truncated or corrupt (naming ``last-1.ckpt`` if intact).
        ValueError: an unknown mode, or ``from_weights`` without a source.

    """
    mode = cfg.start.mode
    if mode == "resume":
        from cropssl.checkpointing import check_checkpoint_file

        ckpt = run_dir / "checkpoints" / str(cfg.start.get("checkpoint") or "last.ckpt")
        if not ckpt.exists():
            raise FileNotFoundError(
                f"start=resume but {ckpt} does not exist. Pass the run to resume with run_dir=<runs/...>, or "
                "use start=fresh to begin a new run."
            )
        check_checkpoint_file(ckpt)  # truncated / corrupt: named, with the previous checkpoint to use
        return str(ckpt)
    if mode == "from_weights" and not cfg.start.get("source"):
        raise ValueError("start=from_weights needs start.source=<checkpoint | export dir | presto>")
    if mode not in ("fresh", "from_weights"):
        raise ValueError(f"unknown start mode {mode!r}; choose fresh, resume or from_weights")
    return None


def data_manifests(data_cfg: Any) -> list[dict[str, Any]]:
    """The manifests of the shard sources a run reads, with their mix weights (for lineage)."""
    from cropssl.checkpointing import sha256_file
    from cropssl.data.datamodule import parse_mix

    train = (
        OmegaConf.to_container(data_cfg.train, resolve=True)
        if OmegaConf.is_config(data_cfg.train)
        else data_cfg.train
    )
    sources, weights = parse_mix(train)
    total = sum(weights)
    out = []
    for urls, w in zip(sources, weights, strict=True):
        manifest = Path(urls[0]).parent / "manifest.json" if urls else None
        entry: dict[str, Any] = {"shards": len(urls), "first": urls[0] if urls else None, "weight": w / total}
        if manifest is not None and manifest.exists():
            entry.update(manifest=str(manifest), manifest_sha256=sha256_file(manifest))
        out.append(entry)
    return out


def lineage_record(
    cfg: DictConfig, run_dir: Path, init_report: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Lineage of this run: the parent's chain (for from_weights) plus a record of this run."""
    parent = None
    chain: list[dict[str, Any]] = []
    if init_report is not None:
        parent = {k: init_report.get(k) for k in ("source", "kind", "path", "sha256")}
        chain = list(init_report.get("parent_lineage") or [])
        if not chain and init_report.get("parent_config"):
            chain = list(init_report["parent_config"].get("lineage") or [])
    record = {
        "run_dir": str(run_dir),
        "method": cfg.method.get("name"),
        "start_mode": cfg.start.mode,
        "parent": parent,
        "data": data_manifests(cfg.data),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    return [*chain, record]


def build_loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None) -> list[Any] | bool:
    """Instantiate the loggers so that a resumed run continues its CSV log and its wandb run."""
    import hashlib

    from hydra.utils import instantiate

    if not cfg.logger:
        return False
    loggers = []
    for node in cfg.logger.values():
        target = str(node.get("_target_", ""))
        kwargs: dict[str, Any] = {}
        if target.endswith("ResumableCSVLogger"):
            kwargs["resume_step"] = resume_step
        if target.endswith("WandbLogger") and node.get("id") is None:
            kwargs["id"] = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        loggers.append(instantiate(node, **kwargs))
    return loggers


def write_summary(run_dir: Path, wall_time: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read metrics.csv, plot the loss curve, write summary.json; return the summary.

    Besides the losses, the summary holds the last value of every ``monitor/*`` metric and ``extra``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    summary: dict[str, Any] = {"run_dir": str(run_dir), "wall_time_s": round(wall_time, 1), **(extra or {})}
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    summary["checkpoint"] = str(ckpt) if ckpt.exists() else None
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        df = pd.read_csv(metrics)
        if "train/loss" in df:
            loss = df[["step", "train/loss"]].dropna()
            if len(loss):
                summary.update(
                    first_loss=float(loss["train/loss"].iloc[0]),
                    last_loss=float(loss["train/loss"].iloc[-1]),
                    steps=int(loss["step"].iloc[-1]) + 1,
                )
                fig, ax = plt.subplots(figsize=(6, 3.5))
                ax.plot(loss["step"], loss["train/loss"], label="train/loss")
                if "val/loss" in df:
                    val = df[["step", "val/loss"]].dropna()
                    ax.plot(val["step"], val["val/loss"], "o-", label="val/loss")
                ax.set_xlabel("step")
                ax.set_ylabel("loss")
                ax.set_title(run_dir.name)
                ax.legend()
                fig.tight_layout()
                fig.savefig(run_dir / "loss_curve.png", dpi=100)
                plt.close(fig)
                summary["loss_curve"] = str(run_dir / "loss_curve.png")
        for col in df.columns:
            if col.startswith("monitor/") and df[col].notna().any():
                summary[col] = float(df[col].dropna().iloc[-1])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def save_final_checkpoint(trainer: Any, run_dir: Path, every_n_steps: int | None) -> None:
    """Make ``checkpoints/last.ckpt`` hold the final step (periodic saves may have stopped short of it).

    The decision is the same on every rank (saving is collective): the step was saved if it is a multiple
    of the checkpoint interval or the step a signal stopped the run at.
    """
    from cropssl.callbacks.requeue import GracefulShutdown

    step = int(trainer.global_step)
    stopped = {cb.stopped_at for cb in trainer.callbacks if isinstance(cb, GracefulShutdown)}
    if (every_n_steps and step % int(every_n_steps) == 0) or step in stopped:
        return
    trainer.save_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))


def end_distributed() -> None:
    """After training: wait for every rank, then leave the process group (DDP only; else nothing)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Pre-train per the composed config; returns the run summary."""
    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from cropssl.profiling import encoder_macs_per_sample, train_step_macs_per_sample

    check_config(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt_path = resolve_start(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    encoder = instantiate(cfg.encoder)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(method_cfg, dict)
    method_cfg.pop("name", None)
    method = instantiate(method_cfg, encoder=encoder, _convert_="all")
    method.set_seed(cfg.seed)
    init_report = None
    if cfg.start.mode == "from_weights":
        from cropssl.checkpointing import init_from_weights

        init_report = init_from_weights(
            method, str(cfg.start.source), strict=cfg.start.strict, reset_teacher=cfg.start.reset_teacher
        )
        if method.anchor_weight > 0:
            method.set_anchor()  # L2-SP towards the weights the run starts from
    elif method.anchor_weight > 0 and ckpt_path is None:
        raise ValueError(
            f"method.anchor={method.anchor_weight} pulls the encoder towards its starting weights: it needs "
            "start=from_weights (a fresh run has no weights worth keeping)"
        )
    lineage = lineage_record(cfg, run_dir, init_report)
    start_step = 0
    if ckpt_path is not None:  # resume: keep the lineage the run started with, and record the resume
        from cropssl.checkpointing import load_checkpoint

        resumed = load_checkpoint(ckpt_path)  # read once here (Lightning reads it again to restore)
        start_step = int(resumed["global_step"])
        lineage = [dict(r) for r in resumed.get("cropssl", {}).get("lineage", lineage)]
        lineage[-1]["resumes"] = [
            *lineage[-1].get("resumes", []),
            {
                "at": datetime.now().isoformat(timespec="seconds"),
                "from_step": start_step,
                "checkpoint": Path(ckpt_path).name,
            },
        ]
        del resumed
    method.checkpoint_extras = {"run_config": OmegaConf.to_container(cfg, resolve=True), "lineage": lineage}
    datamodule = instantiate(cfg.data)
    loggers = build_loggers(cfg, run_dir, None if ckpt_path is None else start_step)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told not to show
        from pytorch_lightning.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    no_val = {} if cfg.data.get("val") else {"limit_val_batches": 0}  # no validation shards: no val loop
    trainer = instantiate(
        cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir), **no_val
    )
    cost = {
        "train_macs_per_sample": train_step_macs_per_sample(method),
        "encoder_macs_per_sample": encoder_macs_per_sample(method.encoder),
    }
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
        n_enc = sum(p.numel() for p in method.encoder.parameters())
        n_train = sum(p.numel() for p in method.parameters() if p.requires_grad)
        log.info(
            "%s: %s trainable parameters (encoder %s); encoder %.1f MMACs per pixel at T=12, one "
            "training step %.1f MMACs per sample (cropssl.profiling, attention included)",
            cfg.method.get("name"),
            f"{n_train:,}",
            f"{n_enc:,}",
            cost["encoder_macs_per_sample"] / 1e6,
            cost["train_macs_per_sample"] / 1e6,
        )
    start = time.time()
    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path)
    every_n = (cfg.callbacks or {}).get("checkpoint", {}).get("every_n_train_steps")
    save_final_checkpoint(trainer, run_dir, every_n)
    end_distributed()  # the summary below runs forward passes on rank 0 alone (no collectives)
    summary: dict[str, Any] = {"run_dir": str(run_dir)}
    if trainer.is_global_zero and cfg.summary:
        wall = time.time() - start
        samples = (trainer.global_step - start_step) * int(cfg.data.batch_size) * trainer.world_size
        extra = {
            "method": cfg.method.get("name"),
            "batch_size": int(cfg.data.batch_size),
            "samples_per_s": round(samples / max(wall, 1e-9), 1),
            **cost,
        }
        stream = getattr(datamodule, "train_stream", None)
        if stream is not None and (stream.preflight_skipped or stream.skipped_shards):
            extra["skipped_shards"] = [
                *({"shard": u, "problem": why} for u, why in stream.preflight_skipped),
                *({"shard": u, "problem": "unreadable"} for u in stream.skipped_shards),
            ]
        summary = write_summary(run_dir, wall, extra)
        print(json.dumps(summary, indent=2))
    return summary


#: Callbacks that log each ``monitor/*`` objective.
_MONITOR_OF = {
    "monitor/knn_f1": "ProbeMonitor",
    "monitor/linear_f1": "ProbeMonitor",
    "monitor/emb_std": "EmbeddingHealth",
    "monitor/rankme": "EmbeddingHealth",
}


def check_objective(cfg: DictConfig) -> str | None:
    """The configured ``objective`` metric, after checking the run will produce it (fails before training).

    Raises:
        ValueError: the run writes no summary, or no configured callback logs the ``monitor/*`` metric.

    """
    metric = cfg.get("objective")
    if metric is None:
        return None
    metric = str(metric)
    if not cfg.summary:
        raise ValueError(f"objective={metric} is read from summary.json: set summary=true")
    needed = _MONITOR_OF.get(metric)
    if needed is not None:
        targets = [str(c.get("_target_", "")) for c in (cfg.callbacks or {}).values()]
        if not any(t.endswith(needed) for t in targets):
            raise ValueError(
                f"objective={metric} is logged by the {needed} callback, which this run does not have: add "
                "callbacks=monitors (and labelled shards in callbacks.probe.labelled_shards)"
            )
    return metric


def objective_value(cfg: DictConfig, summary: dict[str, Any]) -> float | None:
    """The value a sweeper optimises: the last value of ``cfg.objective`` (default ``last_loss``).

    Looked up in the summary (``last_loss``, ``monitor/knn_f1``, ...), then as a column of the run's
    ``metrics.csv`` (``train/loss``, ...). ``None`` on ranks other than 0 and, without an explicit
    ``objective``, when the run has no final loss.

    Raises:
        KeyError: an explicit ``objective`` the run did not log, listing what it did log.

    """
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0 or "wall_time_s" not in summary:
        return None
    metric = cfg.get("objective")
    key = "last_loss" if metric is None else str(metric)
    value = summary.get(key)
    columns: list[str] = []
    metrics = Path(summary["run_dir"]) / "metrics.csv"
    if value is None and metrics.exists():
        import pandas as pd

        df = pd.read_csv(metrics)
        columns = list(df.columns)
        if key in df and df[key].notna().any():
            value = df[key].dropna().iloc[-1]
    if value is None:
        if metric is None:
            return None
        raise KeyError(
            f"objective {key!r} was not logged by this run: summary.json has {sorted(summary)}"
            + (f", metrics.csv has {columns}" if columns else "")
        )
    return float(value)


@contextlib.contextmanager
def ddp_job_env(cfg: DictConfig, run_dir: Path) -> Iterator[None]:
    """Hand this job's run directory and overrides to the DDP ranks Lightning starts; clean up after.

    In the launching process only (not in a rank started by a launcher, which has ``LOCAL_RANK``). On exit
    the variables Lightning's launcher set are restored and the process group is destroyed, so the next
    job of a multirun in the same process starts its own ranks.
    """
    if "LOCAL_RANK" in os.environ:
        yield
        return
    from hydra.core.hydra_config import HydraConfig

    saved = {k: os.environ.get(k) for k in (*_DDP_ENV, RUN_DIR_ENV, OVERRIDES_ENV)}
    os.environ[RUN_DIR_ENV] = str(run_dir)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    os.environ[OVERRIDES_ENV] = json.dumps(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # the job failed: leave the group anyway
            dist.destroy_process_group()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _global_rank_from_env() -> int:
    if os.environ.get("RANK", "").isdigit():  # torchrun
        return int(os.environ["RANK"])
    if _in_multitask_srun() and os.environ.get("SLURM_PROCID", "").isdigit():
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


#: Hydra command-line flags that choose the config (kept when a DDP rank's command line is rewritten).
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _config_flags(argv: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            out += [arg, argv[i + 1]]
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS and "=" in arg:
            out.append(arg)
    return out


def rank_argv(argv: list[str]) -> list[str]:
    """The command line of this process: rewritten for a DDP rank so that it joins the launcher's job.

    A rank Lightning started re-runs this app with the launcher's command line, which in a multirun holds
    the whole sweep: it gets the job's own overrides and run directory instead. Ranks other than 0 write no
    ``.hydra`` directory and no log file (rank 0 does).
    """
    run_dir, overrides = os.environ.get(RUN_DIR_ENV), os.environ.get(OVERRIDES_ENV)
    if run_dir and overrides is not None and os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
        return [
            argv[0],
            *_config_flags(argv[1:]),
            *json.loads(overrides),
            f"hydra.run.dir={_quote(run_dir)}",
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
        ]
    if _global_rank_from_env() == 0:
        return argv
    extra = []
    if not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append("hydra.output_subdir=null")
    if not any(a.startswith("hydra/job_logging=") for a in argv):
        extra.append("hydra/job_logging=stdout")
    return [*argv, *extra]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input (config, data, files): one line, no traceback."""
    from cropssl.checkpointing import CheckpointError
    from cropssl.config import ConfigKeyError
    from cropssl.data.shards import ShardError
    from cropssl.io.atomic import OutputError

    return (ConfigKeyError, CheckpointError, ShardError, OutputError, FileNotFoundError, ValueError, KeyError)


def _fail(exc: BaseException, run_dir: Path | None) -> None:
    """Print the one-line error; remove the run directory this start created if nothing was trained."""
    import shutil

    created = {Path(d).resolve() for d in _CHOSEN_RUN_DIRS.values()}
    trained = run_dir is not None and any((run_dir / f).exists() for f in ("checkpoints", "metrics.csv"))
    if run_dir is not None and run_dir.resolve() in created and not trained:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"cropssl-pretrain: error: {exc}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pretrain")
def pretrain_app(cfg: DictConfig) -> float | None:
    """The Hydra task: pre-train, then return the objective value (what an Optuna sweep optimises).

    User errors (a config typo, missing shards, a damaged checkpoint, an unwritable output) print one line
    and exit with status 2; a failed start leaves no run directory behind.
    """
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_objective(cfg)
        with ddp_job_env(cfg, run_dir):
            summary = run(cfg)
    except user_errors() as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _fail(exc, run_dir)
    return objective_value(cfg, summary)


def precheck_overrides(argv: list[str]) -> None:
    """Compose the config of a single run before Hydra does, to name a mistyped key with a suggestion.

    Hydra's own message for ``trainer.max_step=5`` suggests appending ``+trainer.max_step``; this says
    ``Did you mean 'max_steps'?`` instead and exits with status 2. Multiruns and sweep syntax are left
    to Hydra.
    """
    import re

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from cropssl.config import suggest

    if any(a in ("-m", "--multirun") or a.startswith(("--config", "-c")) for a in argv[1:]):
        return
    args = [a for a in argv[1:] if "=" in a and not a.startswith(("-", "hydra"))]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose("pretrain", overrides=args)
    except MissingConfigException as exc:
        print(f"cropssl-pretrain: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        options = re.search(r"Available options in '[^']*':(.*?)(?:Config search path|$)", str(exc), re.S)
        if options:
            print("valid options: " + " ".join(options.group(1).split()), file=sys.stderr)
        sys.exit(2)
    except ConfigCompositionException as exc:
        text = f"{exc} {exc.__cause__ or ''}"
        m = re.search(r"full_key: (\S+)", text) or re.search(r"override '([^']+)'", text)
        if not m:
            print(f"cropssl-pretrain: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            base = compose("pretrain", overrides=[a for a in args if not a.startswith(key + "=")])
        node = OmegaConf.select(base, parent) if parent else base
        valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
        print(
            f"cropssl-pretrain: error: unknown config key {key!r}.{suggest(leaf, valid)} "
            f"Valid keys of {parent or 'the config'}: {sorted(valid)}",
            file=sys.stderr,
        )
        sys.exit(2)


def main(cfg: DictConfig | None = None) -> float | None:
    """Entry point of ``cropssl-pretrain``.

    From the command line (no ``cfg``) it runs the Hydra app, whose task returns the objective value to
    the sweeper (Hydra's own entry point returns ``None``). Given a composed ``cfg``, it runs that config
    and returns the objective value.
    """
    if cfg is not None:
        return pretrain_app(cfg)
    quiet_libraries()
    sys.argv = rank_argv(list(sys.argv))
    if "LOCAL_RANK" not in os.environ and os.environ.get("HYDRA_FULL_ERROR") != "1":
        precheck_overrides(sys.argv)
    pretrain_app()
    return None


if __name__ == "__main__":
    main()
