"""``cropssl-shard``: ingest WorldCereal parquet (long or wide) and NetCDF cubes into webdataset shards.

Example::

    cropssl-shard ../shared/data/worldcereal --out work/shards/all
    cropssl-shard cube.nc --start 2020-11 --end 2021-10 --out work/shards/bel
    cropssl-shard dekadal.geoparquet --cadence native --out work/shards/dekads
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from cropssl.data.build import shard_files
from cropssl.data.ingest import IngestOptions, InputFormatError
from cropssl.data.ingest.units import parse_units
from cropssl.io.atomic import OutputError


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="cropssl-shard", description=__doc__.split("\n")[0])
    p.add_argument(
        "inputs", nargs="+", help="input files, directories of them or globs: parquet (long / wide), .nc"
    )
    p.add_argument("--out", required=True, help="output shard directory (must not exist unless --overwrite)")
    p.add_argument("--timesteps", type=int, default=None, help="months per sample window (default 12)")
    p.add_argument(
        "--cadence",
        choices=["month", "native"],
        default="month",
        help="month: aggregate sub-monthly (dekadal) series to months (default); native: keep dekads",
    )
    p.add_argument("--start", default=None, help="first month of a fixed window, YYYY-MM (with --end)")
    p.add_argument("--end", default=None, help="last month of a fixed window, YYYY-MM (with --start)")
    p.add_argument(
        "--season-end-month",
        type=int,
        default=None,
        help="end every window on this calendar month (1-12): the first at/after valid_time, else the last",
    )
    p.add_argument("--label-column", default=None, help="column holding the labels (default ewoc_code)")
    p.add_argument("--label-map", default=None, help="JSON or CSV file mapping label values to ewoc codes")
    p.add_argument(
        "--unmapped",
        choices=["drop", "other", "error"],
        default="drop",
        help="label values the map lacks: drop (unlabelled), other (the map's 'other' code), error",
    )
    p.add_argument(
        "--units", default=None, help="units of stored values overriding the file, e.g. VV=dB,VH=dB"
    )
    p.add_argument(
        "--out-of-range",
        choices=["error", "mask"],
        default="error",
        help="values outside a band's physical range: refuse the file (default) or mask them",
    )
    p.add_argument(
        "--max-non-numeric",
        type=float,
        default=0.01,
        help="largest share of non-numeric entries masked in a band column before the file is refused",
    )
    p.add_argument("--samples-per-record", type=int, default=256, help="largest record (pixels)")
    p.add_argument("--records-per-shard", type=int, default=16, help="largest .tar shard (records)")
    p.add_argument(
        "--readers",
        type=int,
        default=4,
        help="ranks x dataloader workers that will read the shards: at least 8 shards each (default 4)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the write-time shuffle across inputs")
    p.add_argument(
        "--bucket-samples",
        type=int,
        default=100_000,
        help="samples shuffled in memory at a time (memory bound of the write-time shuffle)",
    )
    p.add_argument("--labelled-only", action="store_true", help="keep only samples with a label")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    return p


def options_from_args(args: argparse.Namespace) -> IngestOptions:
    """The ingest options of the parsed arguments (refusing contradictory ones)."""
    if args.start and args.timesteps is not None:
        raise InputFormatError("--timesteps and --start/--end exclude each other (the window sets T)")
    return IngestOptions(
        timesteps=12 if args.timesteps is None else args.timesteps,
        cadence=args.cadence,
        start=args.start,
        end=args.end,
        season_end_month=args.season_end_month,
        label_column=args.label_column,
        label_map=args.label_map,
        unmapped=args.unmapped,
        units=parse_units(args.units),
        on_out_of_range=args.out_of_range,
        max_non_numeric=args.max_non_numeric,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-shard``."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = shard_files(
            args.inputs,
            args.out,
            options=options_from_args(args),
            samples_per_record=args.samples_per_record,
            records_per_shard=args.records_per_shard,
            readers=args.readers,
            seed=args.seed,
            bucket_samples=args.bucket_samples,
            labelled_only=args.labelled_only,
            overwrite=args.overwrite,
        )
    except (InputFormatError, FileExistsError, FileNotFoundError, OutputError) as exc:
        print(f"cropssl-shard: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    size = sum(e["bytes"] for e in manifest["shards"])
    n = manifest["num_samples"]
    print(
        f"wrote {n} samples ({manifest['num_labelled']} labelled, T={manifest['timesteps']}, "
        f"cadence {manifest['cadence']}) in {len(manifest['shards'])} shard(s) to {args.out}: "
        f"{size / 1e6:.2f} MB ({size / max(n, 1) * 1000 / 1e6:.2f} MB per 1,000 pixels) in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
