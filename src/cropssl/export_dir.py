"""Reading an export directory (``cropssl-export``): its ``config.json``, weights and continue bundle.

Needs only torch, safetensors and :mod:`cropssl.encoder` (no Lightning, Hydra or timm): this is what
``cropssl.load_encoder`` runs. Writing the directory is :mod:`cropssl.export`. Every error names the file
and the command that re-creates it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from cropssl.artifacts import CONFIG_FILE, CONTINUE_FILE, WEIGHTS_FILE
from cropssl.encoder import PixelTimeSeriesEncoder


class ExportError(ValueError):
    """A checkpoint cannot be exported (no cropssl metadata, no encoder weights, ...)."""


def reexport_hint(config: Mapping[str, Any] | None) -> str:
    """The ``cropssl-export`` command that re-creates an export (``DIR`` stands for its directory)."""
    parent = ((config or {}).get("parent_checkpoint") or {}).get("path")
    ckpt = parent if parent else "CKPT"
    return f"re-export it with `cropssl-export {ckpt} --out DIR --overwrite`"


def read_export_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``config.json`` of an export directory.

    Args:
        path: The export directory.

    Returns:
        The parsed configuration.

    Raises:
        FileNotFoundError: The directory or its ``config.json`` is missing (the message says how to
            re-export).
        ValueError: ``config.json`` is not a cropssl export configuration.

    """
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(
            f"export directory {d} does not exist; create it with `cropssl-export CKPT --out {d}`"
        )
    cfg_path = d / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"export directory {d} lacks {CONFIG_FILE}; {reexport_hint(None).replace('DIR', str(d))}"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path} is not valid JSON ({exc}); {reexport_hint(None)}") from exc
    enc_cfg = config.get("encoder_config") or config.get("encoder")
    if not isinstance(enc_cfg, Mapping):
        raise ValueError(f"{cfg_path} has no encoder_config: not a cropssl export; {reexport_hint(config)}")
    return config


def read_safetensors(path: Path, config: Mapping[str, Any] | None, device: str = "cpu") -> dict[str, Tensor]:
    """Read a ``.safetensors`` file of an export directory; a damaged one is named with the fix.

    Raises:
        ValueError: the file is truncated or not a safetensors file (names it and how to re-export).

    """
    from safetensors import SafetensorError

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as exc:
        hint = reexport_hint(config).replace("DIR", str(path.parent))
        raise ValueError(f"{path} is truncated or corrupt ({exc}); {hint}") from exc


def load_encoder(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", backend: str = "torch"
) -> PixelTimeSeriesEncoder:
    """Load an exported encoder (``model.safetensors`` + ``config.json``) in eval mode.

    Only torch, safetensors and :mod:`cropssl.encoder` are needed (no Lightning, Hydra or timm); the ONNX
    backends need onnxruntime, ``torch-int8`` torchao.

    Args:
        path: The export directory written by :func:`export_encoder` / ``cropssl-export``.
        map_location: Device to load the weights on (eager backend).
        backend: ``torch`` (eager, default), ``torch-bf16``, ``torch-int8``, ``onnx``, ``onnx-int8`` or
            ``auto`` (the fastest one the directory holds, see :mod:`cropssl.backends`); every backend is
            called as ``encoder(batch)``.

    Returns:
        The encoder in eval mode; its export configuration is attached as ``encoder.export_config``.

    Raises:
        FileNotFoundError: The directory, ``config.json`` or ``model.safetensors`` is missing.
        ValueError: The weights are truncated / corrupt or do not match the architecture in
            ``config.json``.

    """
    if backend != "torch":
        from cropssl.backends import load_backend

        return load_backend(path, backend)
    d = Path(path)
    config = read_export_config(d)
    weights = d / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(
            f"export directory {d} lacks {WEIGHTS_FILE} (the encoder weights); "
            f"{reexport_hint(config).replace('DIR', str(d))}"
        )
    enc_cfg = dict(config.get("encoder_config") or config["encoder"])
    encoder = PixelTimeSeriesEncoder(**enc_cfg)
    state = read_safetensors(weights, config, device=str(map_location))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{weights} does not match the architecture in {d / CONFIG_FILE}: {exc}. "
            f"{reexport_hint(config).replace('DIR', str(d))}"
        ) from exc
    encoder.to(map_location).eval()
    encoder.export_config = config  # type: ignore[assignment]
    encoder.backend = "torch"  # type: ignore[assignment]
    return encoder


def load_continue_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the continue bundle of an export directory (full method state + method hyper-parameters).

    Args:
        path: The export directory.

    Returns:
        The full method ``state_dict`` (student ``encoder.*``, heads, ``teacher.*``) and
        ``config.json["continue"]`` (``method``, ``method_config``, ``global_step``, ...).

    Raises:
        FileNotFoundError: The directory was exported without a continue bundle.

    """
    d = Path(path)
    config = read_export_config(d)
    bundle = d / CONTINUE_FILE
    if not bundle.exists() or not config.get("continue"):
        raise FileNotFoundError(
            f"export directory {d} has no continue bundle ({CONTINUE_FILE}); re-export without "
            f"--no-continue-bundle: {reexport_hint(config).replace('DIR', str(d))}"
        )
    return read_safetensors(bundle, config), dict(config["continue"])
