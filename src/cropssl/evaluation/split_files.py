"""Split files: a :class:`~cropssl.evaluation.splits.Split` as JSON or parquet (sample ids, folds, info).

``cropssl-evaluate`` writes ``split.json`` into every report; :func:`load_split` reads it back (or any
parquet with ``sample_id`` and ``fold`` columns). Written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cropssl.evaluation.splits import Split
from cropssl.io.atomic import atomic_path, write_text

SPLIT_FORMAT = "cropssl-split"


def save_split(split: Split, path: str | os.PathLike[str]) -> Path:
    """Write a split as JSON (``.json``) or parquet (``.parquet``): sample ids, folds and info."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": SPLIT_FORMAT, "version": 1, "info": split.info, "counts": split.counts()}
    suffix = p.suffix.lower()
    if suffix == ".json":
        doc = {**header, "sample_id": split.sample_id.tolist(), "fold": split.fold.tolist()}
        write_text(p, json.dumps(doc, indent=1) + "\n")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"sample_id": split.sample_id.tolist(), "fold": split.fold.tolist()})
        with atomic_path(p) as tmp:
            pq.write_table(table.replace_schema_metadata({SPLIT_FORMAT: json.dumps(header)}), tmp)
    else:
        raise ValueError(f"split files are .json or .parquet, got {p}")
    return p


def load_split(path: str | os.PathLike[str]) -> Split:
    """Read a split written by :func:`save_split` (or any parquet with ``sample_id`` and ``fold`` columns)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        doc = json.loads(p.read_text())
        if doc.get("format") != SPLIT_FORMAT:
            raise ValueError(f"{p} is not a {SPLIT_FORMAT} file")
        return Split(
            np.asarray(doc["sample_id"], dtype=object), np.asarray(doc["fold"], dtype=object), doc["info"]
        )
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        if not {"sample_id", "fold"} <= set(table.column_names):
            raise ValueError(f"{p}: needs 'sample_id' and 'fold' columns, has {table.column_names}")
        meta = table.schema.metadata or {}
        raw = meta.get(SPLIT_FORMAT.encode())
        info = json.loads(raw)["info"] if raw else {"kind": "file", "path": str(p)}
        return Split(
            np.asarray(table.column("sample_id").to_pylist(), dtype=object),
            np.asarray(table.column("fold").to_pylist(), dtype=object),
            info,
        )
    raise ValueError(f"split files are .json or .parquet, got {p}")
