"""Input files -> one shard directory: expand the inputs, ingest each, mix them, write shards + manifest."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.data.ingest import CUBE_SUFFIXES, PARQUET_SUFFIXES, IngestOptions, InputFormatError, read_input
from cropssl.schema import PixelSamples

INPUT_SUFFIXES = PARQUET_SUFFIXES + CUBE_SUFFIXES


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files of ``inputs``: each a file, a directory (its parquet / NetCDF files, sorted) or a glob.

    Raises:
        FileNotFoundError: an input matches nothing, or a directory holds no supported file.

    """
    out: list[Path] = []
    for spec in map(str, inputs):
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"directory {p} holds no input file ({', '.join(INPUT_SUFFIXES)})")
            out.extend(found)
        elif any(c in spec for c in "*?[") and not p.exists():
            found = sorted(Path(f) for f in glob.glob(spec))
            if not found:
                raise FileNotFoundError(f"no input file matches {spec!r}")
            out.extend(found)
        else:
            if not p.exists():
                raise FileNotFoundError(f"input file not found: {p}")
            out.append(p)
    return out


def estimate_samples(paths: Sequence[Path]) -> int:
    """A cheap upper bound of the samples in ``paths`` (parquet rows, cube pixels), without reading them."""
    import pyarrow.parquet as pq

    total = 0
    for p in paths:
        try:
            if p.suffix.lower() in CUBE_SUFFIXES:
                import xarray as xr

                with xr.open_dataset(p, engine="h5netcdf", decode_cf=False) as ds:
                    sizes = [int(n) for d, n in ds.sizes.items() if d not in ("t", "time")]
                    total += int(np.prod(sizes[-2:])) if len(sizes) >= 2 else 1
            else:
                total += pq.ParquetFile(p).metadata.num_rows
        except Exception:  # unreadable files are reported by the reader, with their name
            total += 1
    return total


def _save_part(path: Path, s: PixelSamples) -> None:
    arrays = {k: getattr(s, k) for k in ("x", "mask", "month", "latlon", "label", "year")}
    if s.dynamic_world is not None:
        arrays["dynamic_world"] = s.dynamic_world
    meta = json.dumps({k: [str(v) for v in s.meta[k]] for k in sorted(s.meta)})
    np.savez(path, meta=np.array(meta), **arrays)


def _load_part(path: Path) -> PixelSamples:
    with np.load(path, allow_pickle=False) as z:
        meta = {k: np.asarray(v, dtype=object) for k, v in json.loads(str(z["meta"])).items()}
        dw = z.get("dynamic_world")
        return PixelSamples(z["x"], z["mask"], z["month"], z["latlon"], z["label"], z["year"], meta, dw)


def shard_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    timesteps: int | None = None,
    options: IngestOptions | None = None,
    samples_per_record: int = 256,
    records_per_shard: int = 16,
    readers: int = 4,
    labelled_only: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    bucket_samples: int = 100_000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Ingest ``inputs`` and write one shard directory, shuffled across all inputs; returns the manifest.

    Samples are mixed at write time, so every record holds pixels of every input in its share and a
    stream's shuffle buffer never sees one file or one place at a time. Memory does not grow with the
    corpus: inputs are read one at a time and each sample is scattered to one of ``K`` bucket files on
    disk (``K`` from a cheap estimate of the corpus size, ``bucket_samples`` per bucket); each bucket is
    then shuffled in memory and written. Seeded: the same inputs, options and ``seed`` give the same bytes.

    Args:
        inputs: Files, directories or globs (see :func:`expand_inputs`).
        out: The shard directory to write (atomically).
        timesteps: Months per window (overrides ``options.timesteps``).
        options: How to read the inputs (:class:`~cropssl.data.ingest.IngestOptions`).
        samples_per_record: Largest record (pixels).
        records_per_shard: Largest shard (records).
        readers: Ranks x dataloader workers expected to read the shards: at least 8 shards each
            (:func:`~cropssl.data.shard_writer.shard_layout`).
        labelled_only: Keep only labelled samples.
        overwrite: Replace an existing ``out``.
        seed: Seed of the write-time shuffle.
        bucket_samples: Samples per bucket, the unit held in memory while shuffling.
        log: Where the per-file lines go.

    Raises:
        InputFormatError: an input cannot be read correctly, inputs disagree on cadence or T, or nothing
            usable is left.

    """
    from cropssl.data.shard_writer import ShardWriter, shard_layout
    from cropssl.io.atomic import atomic_dir

    options = options or IngestOptions()
    if timesteps is not None:
        options = dataclasses.replace(options, timesteps=timesteps)
    paths = expand_inputs(inputs)
    estimate = estimate_samples(paths)
    n_buckets = max(1, math.ceil(estimate / max(1, bucket_samples)))
    needed = 2 * estimate * options.timesteps * 17 * 5  # buckets + shards, float32 values + mask
    out = Path(out)
    reports: list[dict[str, Any]] = []
    steps: dict[str, int] = {}
    with atomic_dir(out, overwrite=overwrite, needed_bytes=needed) as tmp:
        buckets = tmp / "buckets"
        buckets.mkdir()
        n_total = 0
        for i, path in enumerate(paths):  # 1. read each input once, scatter its samples to the buckets
            samples, report = read_input(path, options=options)
            if labelled_only:
                samples = samples.select(samples.label >= 0)
            reports.append(dataclasses.asdict(report))
            steps[path.name] = samples.timesteps
            _log_report(log, path, report, len(samples))
            bucket = np.random.default_rng([seed, i]).integers(n_buckets, size=len(samples))
            for b in np.unique(bucket):
                _save_part(buckets / f"{b:05d}_{i:06d}.npz", samples.select(bucket == b))
            n_total += len(samples)
            del samples
        _check_consistent(reports, steps)
        if n_total == 0:
            raise InputFormatError(f"no usable samples in {[str(p) for p in paths]}")
        spr, rps = shard_layout(n_total, samples_per_record, records_per_shard, readers)
        writer = ShardWriter(tmp, spr, rps)
        for b in range(n_buckets):  # 2. shuffle each bucket in memory, write it
            parts = sorted(buckets.glob(f"{b:05d}_*.npz"))
            if not parts:
                continue
            chunk = PixelSamples.concat([_load_part(p) for p in parts])
            writer.add(chunk.select(np.random.default_rng([seed, n_buckets, b]).permutation(len(chunk))))
            for p in parts:
                p.unlink()
        buckets.rmdir()
        return writer.finish(
            [p.name for p in paths],
            {
                "ingest_reports": reports,
                "cadence": reports[0]["cadence"],
                "write_shuffle": {"seed": seed, "buckets": n_buckets, "readers": readers},
            },
        )


def _log_report(log: Callable[[str], None], path: Path, report: Any, n: int) -> None:
    absent = f", bands absent: {','.join(report.missing_bands)}" if report.missing_bands else ""
    window = report.window.get("start", "")
    window = f", window {window}..{report.window['end']}" if window else ""
    log(
        f"  {path.name}: {report.format}, {n} samples, cadence {report.cadence}{window} "
        f"({report.n_skipped_all_missing} all-missing skipped, "
        f"{report.n_nonfinite_values} NaN/inf values masked{absent})"
    )
    for note in report.notes:
        log(f"    note: {note}")


def _check_consistent(reports: list[dict[str, Any]], steps: dict[str, int]) -> None:
    cadences = {r["cadence"] for r in reports}
    if len(cadences) > 1:
        by = {Path(r["path"]).name: r["cadence"] for r in reports}
        raise InputFormatError(
            f"inputs have different cadences {by}; shard them separately or use --cadence month for all"
        )
    if len(set(steps.values())) > 1:
        raise InputFormatError(
            f"inputs give windows of different lengths {steps}; use one --timesteps for all"
        )
