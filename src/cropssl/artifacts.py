"""What every artifact writer shares: file hashes and JSON-safe values.

One home for the helpers that exports, checkpoints, shard manifests, heads and evaluation reports used to
carry their own copies of. Writing files atomically lives in :mod:`cropssl.io.atomic`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["jsonable", "sha256_file"]


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
