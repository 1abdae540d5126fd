"""``cropssl-pretrain``: the Hydra app that pre-trains an encoder with any SSL method.

Examples::

    cropssl-pretrain                                  # MAE on the demo shards
    cropssl-pretrain method=mae trainer.max_steps=100 data.train=work/shards/pretrain
    cropssl-pretrain start=resume run_dir=runs/2026-11-25_10-00-00_mae
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cropssl.config import CONFIG_DIR, check_config

log = logging.getLogger("cropssl.pretrain")


def _run_dir_resolver(run_dir: Any, root: str, name: str) -> str:
    if run_dir not in (None, "", "None", "null"):
        return str(run_dir)
    return f"{root}/{datetime.now():%Y-%m-%d_%H-%M-%S}_{name}"


OmegaConf.register_new_resolver("cropssl_run_dir", _run_dir_resolver, replace=True)


def resolve_start(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint Lightning resumes from, per the start mode (``None`` unless ``resume``).

    Raises:
        FileNotFoundError: a resume was requested but the run has no ``checkpoints/last.ckpt``.
        ValueError: an unknown mode, or ``from_weights`` without a source.

    """
    mode = cfg.start.mode
    if mode == "resume":
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise FileNotFoundError(
                f"start=resume but {ckpt} does not exist. Pass the run to resume with run_dir=<runs/...>, or "
                "use start=fresh to begin a new run."
            )
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


def build_loggers(cfg: DictConfig, run_dir: Path, ckpt_path: str | None) -> list[Any] | bool:
    """Instantiate the loggers so that a resumed run continues its CSV log and its wandb run."""
    import hashlib

    from hydra.utils import instantiate

    if not cfg.logger:
        return False
    resume_step = None if ckpt_path is None else load_checkpoint_step(ckpt_path)
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


def load_checkpoint_step(ckpt_path: str | None) -> int:
    """Global step stored in a checkpoint (0 without one)."""
    if ckpt_path is None:
        return 0
    import torch

    return int(torch.load(ckpt_path, map_location="cpu", weights_only=True)["global_step"])


def save_final_checkpoint(trainer: Any, run_dir: Path) -> None:
    """Make ``checkpoints/last.ckpt`` hold the final step (periodic saves may have stopped short of it)."""
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "_last_global_step_saved", None) == trainer.global_step:
        return
    trainer.save_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))


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
    lineage = lineage_record(cfg, run_dir, init_report)
    if ckpt_path is not None:  # resume: keep the lineage the run started with
        from cropssl.checkpointing import load_checkpoint

        lineage = load_checkpoint(ckpt_path).get("cropssl", {}).get("lineage", lineage)
    method.checkpoint_extras = {"run_config": OmegaConf.to_container(cfg, resolve=True), "lineage": lineage}
    datamodule = instantiate(cfg.data)
    loggers = build_loggers(cfg, run_dir, ckpt_path)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir))
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
    start = time.time()
    start_step = int(load_checkpoint_step(ckpt_path))
    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path)
    save_final_checkpoint(trainer, run_dir)
    summary: dict[str, Any] = {"run_dir": str(run_dir)}
    if trainer.is_global_zero and cfg.summary:
        wall = time.time() - start
        steps_run = trainer.global_step - start_step
        extra = {
            "method": cfg.method.get("name"),
            "batch_size": int(cfg.data.batch_size),
            "samples_per_s": round(steps_run * int(cfg.data.batch_size) / max(wall, 1e-9), 1),
            "train_macs_per_sample": train_step_macs_per_sample(method.cpu()),
            "encoder_macs_per_sample": encoder_macs_per_sample(method.encoder),
        }
        summary = write_summary(run_dir, wall, extra)
        print(json.dumps(summary, indent=2))
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pretrain")
def main(cfg: DictConfig) -> None:
    """Entry point of ``cropssl-pretrain``."""
    run(cfg)


if __name__ == "__main__":
    main()
