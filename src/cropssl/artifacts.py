"""What every artifact reader and writer shares: export file names, hashes, JSON-safe values, Presto's path.

One home for the helpers that exports, checkpoints, shard manifests, heads and evaluation reports used to
carry their own copies of. Writing files atomically lives in :mod:`cropssl.io.atomic`, reading
checkpoints in :mod:`cropssl.checkpointing`, export directories in :mod:`cropssl.export`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_FILE",
    "CONTINUE_FILE",
    "FORMATS",
    "INT8_FILE",
    "ONNX_FILE",
    "PRESTO_ENV",
    "WEIGHTS_FILE",
    "jsonable",
    "presto_path",
    "sha256_file",
]

# the files of an export directory (cropssl-export)
EXPORT_FORMAT = "cropssl-encoder"
EXPORT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
README_FILE = "README.md"
TORCHSCRIPT_FILE = "encoder.torchscript.pt"
ONNX_FILE = "encoder.onnx"
INT8_FILE = "encoder.int8.onnx"
CONTINUE_FILE = "continue.safetensors"
FORMATS: tuple[str, ...] = ("safetensors", "torchscript", "onnx", "onnx-int8")
FORMAT_FILES: dict[str, str] = {
    "safetensors": WEIGHTS_FILE,
    "torchscript": TORCHSCRIPT_FILE,
    "onnx": ONNX_FILE,
    "onnx-int8": INT8_FILE,
}

PRESTO_ENV = "CROPSSL_PRESTO"
"""Environment variable with the path of Presto's published ``default_model.pt``."""
PRESTO_DEFAULT = Path("../shared/presto/default_model.pt")
_PRESTO_REPO = Path(__file__).resolve().parents[2].parent / "shared" / "presto" / "default_model.pt"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: tensors and arrays become lists, numpy scalars Python numbers.

    Non-finite floats become None (JSON has no NaN), paths strings, and any other object its ``str``, so
    that ``json.dumps(jsonable(x))`` never fails.
    """
    if hasattr(value, "detach") and hasattr(value, "numel"):  # a torch tensor, without importing torch
        value = value.detach().cpu().tolist() if value.numel() != 1 else value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def presto_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Location of Presto's ``default_model.pt``: ``path``, ``$CROPSSL_PRESTO`` or the shared data.

    Raises:
        FileNotFoundError: naming every place looked at.

    """
    candidates = (
        [Path(path)] if path else [Path(os.environ[PRESTO_ENV])] if os.environ.get(PRESTO_ENV) else []
    )
    if not candidates:
        candidates = [PRESTO_DEFAULT, _PRESTO_REPO]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"Presto weights not found (looked at {[str(c) for c in candidates]}); set {PRESTO_ENV} to the path "
        "of Presto's default_model.pt (nasaharvest/presto, data/default_model.pt)"
    )
