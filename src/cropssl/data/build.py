"""Input files -> one shard directory: expand the inputs, ingest each, write the shards + manifest."""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def shard_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    timesteps: int | None = None,
    options: IngestOptions | None = None,
    samples_per_record: int = 256,
    records_per_shard: int = 16,
    labelled_only: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Ingest ``inputs`` and write one shard directory; returns the manifest.

    Args:
        inputs: Files, directories or globs (see :func:`expand_inputs`).
        out: The shard directory to write (atomically).
        timesteps: Months per window (overrides ``options.timesteps``).
        options: How to read the inputs (:class:`~cropssl.data.ingest.IngestOptions`).
        samples_per_record: Pixels per webdataset record.
        records_per_shard: Records per ``.tar`` shard.
        labelled_only: Keep only labelled samples.
        overwrite: Replace an existing ``out``.
        log: Where the per-file lines go.

    Raises:
        InputFormatError: an input cannot be read correctly, inputs disagree on cadence or T, or nothing
            usable is left.

    """
    from cropssl.data.shards import write_shards

    options = options or IngestOptions()
    if timesteps is not None:
        options = dataclasses.replace(options, timesteps=timesteps)
    paths = expand_inputs(inputs)
    parts: list[PixelSamples] = []
    reports: list[dict[str, Any]] = []
    for path in paths:
        samples, report = read_input(path, options=options)
        if labelled_only:
            samples = samples.select(samples.label >= 0)
        parts.append(samples)
        reports.append(dataclasses.asdict(report))
        absent = f", bands absent: {','.join(report.missing_bands)}" if report.missing_bands else ""
        window = report.window.get("start", "")
        window = f", window {window}..{report.window['end']}" if window else ""
        log(
            f"  {path.name}: {report.format}, {len(samples)} samples, cadence {report.cadence}{window} "
            f"({report.n_skipped_all_missing} all-missing skipped, "
            f"{report.n_nonfinite_values} NaN/inf values masked{absent})"
        )
        for note in report.notes:
            log(f"    note: {note}")
    cadences = {r["cadence"] for r in reports}
    if len(cadences) > 1:
        by = {Path(r["path"]).name: r["cadence"] for r in reports}
        raise InputFormatError(
            f"inputs have different cadences {by}; shard them separately or use --cadence month for all"
        )
    ts = {Path(r["path"]).name: p.timesteps for r, p in zip(reports, parts)}
    if len(set(ts.values())) > 1:
        raise InputFormatError(f"inputs give windows of different lengths {ts}; use one --timesteps for all")
    samples = PixelSamples.concat(parts)
    if len(samples) == 0:
        raise InputFormatError(f"no usable samples in {[str(p) for p in paths]}")
    return write_shards(
        samples,
        out,
        samples_per_record=samples_per_record,
        records_per_shard=records_per_shard,
        sources=[p.name for p in paths],
        extra={"ingest_reports": reports, "cadence": cadences.pop()},
        overwrite=overwrite,
    )
