"""Embedding pixel time series with an exported encoder (what ``cropssl-embed`` runs; no training stack).

Inputs are shard directories (with ``manifest.json``), WorldCereal parquet files (long or wide) or NetCDF
cubes; they are normalised exactly like training batches (:meth:`cropssl.schema.Batch.from_samples`).
The output format follows the suffix of ``out``:

* ``.parquet``: one row per sample with ``sample_id, source, lat, lon, label, year`` (plus ``row, col``
  for NetCDF cubes) and ``emb_0 .. emb_{d-1}``;
* ``.npy``: the ``[N, d]`` float32 embeddings, with the ids in the sidecar ``<stem>.ids.parquet``.

Samples with too few observed timesteps get NaN embeddings and ``valid = false``: no-data stays no-data.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.schema import BANDS, Batch, PixelSamples

OUT_SUFFIXES = (".parquet", ".npy")


class EmbedError(ValueError):
    """The inputs do not fit the encoder, or the output cannot be written."""


def ids_path(out: str | Path) -> Path:
    """The sidecar ids file of a ``.npy`` output: ``emb.npy`` -> ``emb.ids.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.ids.parquet")


def _open_input(
    path: Path, timesteps: int | None, max_t: int
) -> tuple[str, int, int, Iterator[PixelSamples]]:
    """Return ``(kind, T, n_samples, parts)`` of one input, checking T against the encoder first."""
    if path.is_dir():
        from cropssl.data.shards import iter_samples, load_manifest, resolve_shards

        manifest = load_manifest(path)
        t = int(manifest["timesteps"])
        if manifest.get("bands") not in (None, list(BANDS)):
            raise EmbedError(f"shards {path} have bands {manifest.get('bands')}, expected {list(BANDS)}")
        if timesteps is not None and timesteps != t:
            raise EmbedError(
                f"shards {path} hold T={t} timesteps but --timesteps {timesteps} was given; drop --timesteps "
                "or re-shard the inputs with the wanted T"
            )
        if t > max_t:
            raise EmbedError(
                f"input {path} has T={t} timesteps but the encoder accepts at most max_T={max_t} "
                "(encoder config.json inputs.timesteps.max)"
            )
        return "shards", t, int(manifest.get("num_samples", 0)), iter_samples(resolve_shards(path))
    from cropssl.data.ingest import detect_format, read_input

    t = timesteps if timesteps is not None else min(12, max_t)
    if t > max_t:
        raise EmbedError(
            f"--timesteps {t} is more than the encoder accepts (max_T={max_t}, encoder config.json "
            f"inputs.timesteps.max) for input {path}"
        )
    kind = detect_format(path)
    samples, report = read_input(path, t)
    for note in report.notes:  # what the reader decided (units, padding, no location): said, not hidden
        print(f"note: {path.name}: {note}", file=sys.stderr)
    return kind, t, len(samples), iter([samples])


def _rebatch(parts: Iterator[PixelSamples], batch_size: int) -> Iterator[PixelSamples]:
    """Regroup records / files into batches of ``batch_size`` samples (the last one may be smaller)."""
    buf: list[PixelSamples] = []
    n = 0
    for part in parts:
        if len(part) == 0:
            continue
        buf.append(part)
        n += len(part)
        while n >= batch_size:
            allp = PixelSamples.concat(buf) if len(buf) > 1 else buf[0]
            yield allp.select(slice(0, batch_size))
            rest = allp.select(slice(batch_size, None))
            buf, n = ([rest], len(rest)) if len(rest) else ([], 0)
    if buf:
        yield PixelSamples.concat(buf) if len(buf) > 1 else buf[0]


def embed_inputs(
    encoder_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    batch_size: int = 1024,
    timesteps: int | None = None,
    progress: bool = True,
    min_valid_steps: int = 1,
    backend: str = "torch",
) -> dict[str, Any]:
    """Embed every sample of ``inputs`` with the exported encoder in ``encoder_dir`` and write ``out``.

    Args:
        encoder_dir: Export directory (``model.safetensors`` + ``config.json``).
        inputs: Shard directories, parquet files and/or NetCDF cubes.
        out: Output file, ``.parquet`` or ``.npy`` (then ids go to ``<stem>.ids.parquet``).
        batch_size: Samples per forward pass.
        timesteps: Months per sample window for parquet / NetCDF inputs (default 12, or the encoder's
            max_T if smaller); shard directories keep their own T and must match it if given.
        progress: Show a tqdm progress bar (stderr).
        min_valid_steps: Fewest timesteps with Sentinel-1/2 data a sample needs; others get NaN embeddings
            and ``valid = false`` (no-data stays no-data).
        backend: ``torch``, ``onnx``, ``onnx-int8`` or ``auto`` (see :mod:`cropssl.backends`).

    Returns:
        A summary: ``n``, ``n_nodata``, ``dim``, ``out``, ``ids`` (sidecar path or None), ``seconds``,
        ``px_per_s``, ``setup_seconds`` (of ``seconds``: the torch-int8 backend's calibration and compile).

    Raises:
        EmbedError: The encoder's bands / T do not fit the data, or the output suffix is unsupported.
        FileNotFoundError: The encoder directory or an input is missing.

    """
    from cropssl.export_dir import load_encoder

    out = Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise EmbedError(f"--out {out}: unsupported suffix {out.suffix!r}; use .parquet or .npy")
    if batch_size < 1:
        raise EmbedError(f"--batch-size must be >= 1, got {batch_size}")
    if not inputs:
        raise EmbedError("no inputs given")
    encoder = load_encoder(encoder_dir, backend=backend)
    config: dict[str, Any] = encoder.export_config  # type: ignore[assignment]
    enc_bands = list((config.get("inputs") or {}).get("bands") or BANDS)
    if enc_bands != list(BANDS):
        raise EmbedError(
            f"the encoder in {encoder_dir} expects bands {enc_bands} but the data (cropssl schema) has "
            f"{list(BANDS)}; re-export the encoder with this version of cropssl"
        )
    max_t = encoder.max_T
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"input {p} does not exist")
    opened = [(p, *_open_input(p, timesteps, max_t)) for p in paths]  # checks T of every input first
    start = time.perf_counter()
    emb, table_cols = _embed_all(encoder, opened, batch_size, min_valid_steps, progress)
    seconds = time.perf_counter() - start
    dim = encoder.embed_dim
    ids_file = _write(out, emb, table_cols)
    n_nodata = int((~table_cols["valid"]).sum())
    if n_nodata:
        print(
            f"note: {n_nodata} sample(s) with fewer than {min_valid_steps} timestep(s) of Sentinel-1/2 data "
            "got NaN embeddings (column valid = false)",
            file=sys.stderr,
        )
    return {
        "n": len(emb),
        "n_nodata": n_nodata,
        "dim": dim,
        "out": str(out),
        "ids": None if ids_file is None else str(ids_file),
        "seconds": seconds,
        "px_per_s": len(emb) / seconds if seconds > 0 else float("inf"),
        "setup_seconds": float(getattr(encoder, "setup_seconds", 0.0)),
    }


def _embed_all(
    encoder: Any, opened: list[Any], batch_size: int, min_valid_steps: int, progress: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Embed every opened input in batches; return the ``[N, d]`` embeddings and the id columns."""
    import torch
    from tqdm import tqdm

    total = sum(n for _, _, _, n, _ in opened)
    embs: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("sample_id", "source", "lat", "lon", "label", "year", "valid", "row", "col")
    }
    any_cube = any(kind == "cube" for _, kind, _, _, _ in opened)
    bar = tqdm(total=total or None, unit="px", disable=not progress, desc="embedding", file=sys.stderr)
    with torch.inference_mode():
        for path, _kind, _t, _n, parts in opened:
            offset = 0
            for chunk in _rebatch(parts, batch_size):
                n = len(chunk)
                ok = chunk.observed_steps() >= min_valid_steps
                emb_chunk = np.full((n, encoder.embed_dim), np.nan, np.float32)
                if ok.any():
                    emb_chunk[ok] = encoder(Batch.from_samples(chunk.select(ok))).float().numpy()
                embs.append(emb_chunk)
                cols["valid"].append(ok)
                for key, col in _id_columns(chunk, path.name, offset).items():
                    cols[key].append(col)
                offset += n
                bar.update(n)
    bar.close()
    emb = np.concatenate(embs) if embs else np.zeros((0, encoder.embed_dim), np.float32)
    table_cols = {
        k: np.concatenate(v) if v else np.zeros(0, bool if k == "valid" else np.float64)
        for k, v in cols.items()
        if any_cube or k not in ("row", "col")
    }
    return emb, table_cols


def _id_columns(chunk: PixelSamples, source: str, offset: int) -> dict[str, np.ndarray]:
    """The id columns of one batch: ids (derived from the source and position where empty), place, label."""
    n = len(chunk)
    ids = np.asarray(chunk.meta["sample_id"], dtype=object).astype(str)
    empty = ids == ""
    if empty.any():
        ids[empty] = [f"{source}:{i}" for i in np.flatnonzero(empty) + offset]
    cols = {
        "sample_id": ids,
        "source": np.full(n, source, dtype=object),
        "lat": chunk.latlon[:, 0].astype(np.float64),
        "lon": chunk.latlon[:, 1].astype(np.float64),
        "label": chunk.label.astype(np.int64),
        "year": chunk.year.astype(np.int64),
    }
    for key in ("row", "col"):  # a cube pixel's place in the grid (-1 elsewhere)
        v = np.asarray(chunk.meta.get(key, np.full(n, "")), dtype=object)
        cols[key] = np.array([int(x) if str(x) != "" else -1 for x in v], dtype=np.int64)
    return cols


def _write(out: Path, emb: np.ndarray, table_cols: dict[str, np.ndarray]) -> Path | None:
    """Write ``out`` atomically (``.npy`` + ids sidecar, or one parquet); return the sidecar path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cropssl.io.atomic import atomic_path

    if out.suffix.lower() == ".npy":
        ids_file = ids_path(out)
        with atomic_path(out) as tmp, atomic_path(ids_file) as tmp_ids:
            with open(tmp, "wb") as f:
                np.save(f, emb.astype(np.float32))
            pq.write_table(pa.table(table_cols), tmp_ids)
        return ids_file
    embs = {f"emb_{j}": emb[:, j].astype(np.float32) for j in range(emb.shape[1])}
    with atomic_path(out) as tmp:
        pq.write_table(pa.table({**table_cols, **embs}), tmp)
    return None
