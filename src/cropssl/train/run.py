"""One pre-training run from a composed config: start mode, lineage, loggers, fit, final checkpoint, summary.

The Hydra app (``cropssl-pretrain``, :mod:`cropssl.cli.pretrain`) only composes the config and calls
:func:`run`; the sweep objective (what an Optuna search optimises) is read here too.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cropssl.config import check_config

log = logging.getLogger("cropssl.pretrain")


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
    from cropssl.artifacts import sha256_file
    from cropssl.data.mix import parse_mix

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


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any] | bool:
    """Instantiate the loggers so that a resumed run continues its CSV log and its wandb run."""
    import hashlib

    from hydra.utils import instantiate

    if not cfg.logger:
        return False
    loggers = []
    for node in cfg.logger.values():
        target = str(node.get("_target_", ""))
        kwargs: dict[str, Any] = {}
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
                values = loss["train/loss"]
                if values.min() > 0 and values.max() > 20 * values.min():  # a first-step spike hides the rest
                    ax.set_yscale("log")
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
    method, init_report = build_method(cfg, ckpt_path)
    lineage = lineage_record(cfg, run_dir, init_report)
    method.checkpoint_extras = {"run_config": OmegaConf.to_container(cfg, resolve=True), "lineage": lineage}
    datamodule = instantiate(cfg.data)
    loggers = build_loggers(cfg, run_dir)
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
        _log_size(cfg, method, cost)
    start = time.time()
    method.resume_checkpoint = None if ckpt_path is None else Path(ckpt_path).name
    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path)
    every_n = (cfg.callbacks or {}).get("checkpoint", {}).get("every_n_train_steps")
    save_final_checkpoint(trainer, run_dir, every_n)
    end_distributed()  # the summary below runs forward passes on rank 0 alone (no collectives)
    summary: dict[str, Any] = {"run_dir": str(run_dir)}
    if trainer.is_global_zero and cfg.summary:
        summary = _summarise(cfg, run_dir, trainer, method, datamodule, time.time() - start, cost)
    return summary


def build_method(cfg: DictConfig, ckpt_path: str | None) -> tuple[Any, dict[str, Any] | None]:
    """The encoder and method of the config, started from weights when ``start=from_weights``.

    Returns:
        The method and the report of the weights it started from (None for fresh / resumed runs).

    Raises:
        ValueError: an L2-SP anchor on a fresh run (it has no starting weights to keep).

    """
    from hydra.utils import instantiate

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
    return method, init_report


def _log_size(cfg: DictConfig, method: Any, cost: dict[str, float]) -> None:
    """Log the parameter counts and MACs of the run (rank 0)."""
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


def _summarise(
    cfg: DictConfig, run_dir: Path, trainer: Any, method: Any, datamodule: Any, wall: float,
    cost: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    """Write and print ``summary.json``: throughput of this (possibly resumed) run, cost, skipped shards."""
    steps = trainer.global_step - (method.resumed_step or 0)
    samples = steps * int(cfg.data.batch_size) * trainer.world_size
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
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

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
