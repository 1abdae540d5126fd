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
    """The checkpoint Lightning resumes from, per the start mode (``fresh`` | ``resume``).

    Raises:
        FileNotFoundError: a resume was requested but the run has no ``checkpoints/last.ckpt``.

    """
    mode = cfg.start.mode
    if mode == "fresh":
        return None
    if mode == "resume":
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise FileNotFoundError(
                f"start=resume but {ckpt} does not exist. Pass the run to resume with run_dir=<runs/...>, or "
                "use start=fresh to begin a new run."
            )
        return str(ckpt)
    raise ValueError(f"unknown start mode {mode!r}; choose fresh or resume")


def write_summary(run_dir: Path, wall_time: float) -> dict[str, Any]:
    """Read metrics.csv, plot the loss curve, write summary.json; return the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    summary: dict[str, Any] = {"run_dir": str(run_dir), "wall_time_s": round(wall_time, 1)}
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
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Pre-train per the composed config; returns the run summary."""
    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    check_config(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt_path = resolve_start(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    encoder = instantiate(cfg.encoder)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(method_cfg, dict)
    method_cfg.pop("name", None)
    method = instantiate(method_cfg, encoder=encoder, _convert_="all")
    method.checkpoint_extras = {"run_config": OmegaConf.to_container(cfg, resolve=True)}
    datamodule = instantiate(cfg.data)
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else False
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir))
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
    start = time.time()
    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path)
    summary: dict[str, Any] = {"run_dir": str(run_dir)}
    if trainer.is_global_zero and cfg.summary:
        summary = write_summary(run_dir, time.time() - start)
        print(json.dumps(summary, indent=2))
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pretrain")
def main(cfg: DictConfig) -> None:
    """Entry point of ``cropssl-pretrain``."""
    run(cfg)


if __name__ == "__main__":
    main()
