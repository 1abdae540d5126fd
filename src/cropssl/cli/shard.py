"""``cropssl-shard``: ingest WorldCereal parquet (long or wide) and NetCDF cubes into webdataset shards.

Example::

    cropssl-shard ../shared/data/worldcereal/*.parquet ../shared/data/worldcereal/*.nc --out work/shards/all
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cropssl.data.ingest import InputFormatError, read_input
from cropssl.data.shards import write_shards
from cropssl.schema import PixelSamples


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="cropssl-shard", description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="input files: .parquet/.geoparquet (long or wide) or .nc cubes")
    p.add_argument("--out", required=True, help="output shard directory (must not exist unless --overwrite)")
    p.add_argument("--timesteps", type=int, default=12, help="months per sample window (default 12)")
    p.add_argument("--samples-per-record", type=int, default=256, help="pixels packed per record")
    p.add_argument("--records-per-shard", type=int, default=16, help="records per .tar shard")
    p.add_argument("--labelled-only", action="store_true", help="keep only samples with a label")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    return p


def shard_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    timesteps: int = 12,
    samples_per_record: int = 256,
    records_per_shard: int = 16,
    labelled_only: bool = False,
    overwrite: bool = False,
) -> dict:
    """Ingest ``inputs`` and write one shard directory; returns the manifest."""
    parts: list[PixelSamples] = []
    reports = []
    for path in inputs:
        samples, report = read_input(path, timesteps)
        if labelled_only:
            samples = samples.select(samples.label >= 0)
        parts.append(samples)
        reports.append(dataclasses.asdict(report))
        absent = f", bands absent: {','.join(report.missing_bands)}" if report.missing_bands else ""
        print(
            f"  {Path(path).name}: {report.format}, {len(samples)} samples "
            f"({report.n_skipped_all_missing} all-missing skipped, "
            f"{report.n_nonfinite_values} NaN/inf values masked{absent})"
        )
    samples = PixelSamples.concat(parts)
    if len(samples) == 0:
        raise InputFormatError(f"no usable samples in {[str(p) for p in inputs]}")
    return write_shards(
        samples,
        out,
        samples_per_record=samples_per_record,
        records_per_shard=records_per_shard,
        sources=[Path(p).name for p in inputs],
        extra={"ingest_reports": reports},
        overwrite=overwrite,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-shard``."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = shard_files(
            args.inputs,
            args.out,
            timesteps=args.timesteps,
            samples_per_record=args.samples_per_record,
            records_per_shard=args.records_per_shard,
            labelled_only=args.labelled_only,
            overwrite=args.overwrite,
        )
    except (InputFormatError, FileExistsError, FileNotFoundError) as exc:
        print(f"cropssl-shard: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    size = sum(e["bytes"] for e in manifest["shards"])
    n = manifest["num_samples"]
    print(
        f"wrote {n} samples ({manifest['num_labelled']} labelled, T={manifest['timesteps']}) in "
        f"{len(manifest['shards'])} shard(s) to {args.out}: {size / 1e6:.2f} MB "
        f"({size / max(n, 1) * 1000 / 1e6:.2f} MB per 1,000 pixels) in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
