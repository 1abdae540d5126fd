"""Helpers shared by the evaluation / prediction tests: tiny real encoders, exports and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.export import export_encoder

TINY_CONFIG: dict[str, Any] = {"d": 32, "depth": 1, "heads": 4, "mlp_ratio": 2.0, "max_T": 24}


def tiny_encoder(seed: int = 0, **overrides: Any) -> PixelTimeSeriesEncoder:
    """A tiny randomly initialised encoder (seeded)."""
    torch.manual_seed(seed)
    return PixelTimeSeriesEncoder(**{**TINY_CONFIG, **overrides}).eval()


def write_checkpoint(encoder: PixelTimeSeriesEncoder, path: Path, method: str = "mae") -> Path:
    """A checkpoint with the layout cropssl-pretrain writes (``encoder.*`` state + cropssl metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    ckpt = {
        "state_dict": state,
        "global_step": 0,
        "epoch": 0,
        "cropssl": {"encoder_config": encoder.config, "method": method, "lineage": []},
    }
    torch.save(ckpt, path)
    return path


def export_tiny(out: Path, seed: int = 0, **overrides: Any) -> Path:
    """Export a tiny encoder with the real export module (safetensors only, fast)."""
    enc = tiny_encoder(seed, **overrides)
    ckpt = write_checkpoint(enc, out.parent / f".{out.name}.ckpt")
    export_encoder(ckpt, out, formats=["safetensors"], continue_bundle=False, overwrite=True)
    return out
