"""``cropssl-synth``: write synthetic labelled crop pixel time series as shards (the embedded default data).

Example::

    cropssl-synth --out work/shards/synth --pixels 100000 --regions north_europe,east_africa --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from cropssl.data.synth import DEFAULT_YEARS, REGIONS, synth_to_shards


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="cropssl-synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output shard directory (must not exist unless --overwrite)")
    p.add_argument("--pixels", type=int, required=True, help="number of pixels to generate")
    p.add_argument("--timesteps", type=int, default=12, help="months per sample window (default 12)")
    p.add_argument(
        "--regions",
        default=",".join(REGIONS),
        help=f"comma-separated regions (default all: {','.join(REGIONS)})",
    )
    p.add_argument(
        "--years",
        default=",".join(map(str, DEFAULT_YEARS)),
        help=f"comma-separated harvest years (default {','.join(map(str, DEFAULT_YEARS))})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical shards)")
    p.add_argument(
        "--variety",
        type=float,
        default=None,
        help="within-class variety: 0 = the clean physical model; default: calibrated to the real files",
    )
    p.add_argument("--samples-per-record", type=int, default=256, help="pixels packed per record")
    p.add_argument("--records-per-shard", type=int, default=16, help="records per .tar shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    return p


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-synth``."""
    args = build_parser().parse_args(argv)

    def fail(msg: str) -> int:
        print(f"cropssl-synth: error: {msg}", file=sys.stderr)
        return 2

    if args.pixels <= 0:
        return fail(f"--pixels must be > 0, got {args.pixels}")
    if args.timesteps <= 0:
        return fail(f"--timesteps must be > 0, got {args.timesteps}")
    regions = _split(args.regions)
    unknown = [r for r in regions if r not in REGIONS]
    if unknown or not regions:
        return fail(f"unknown region(s) {unknown or args.regions!r}; valid regions: {', '.join(REGIONS)}")
    try:
        years = [int(y) for y in _split(args.years)]
    except ValueError:
        return fail(f"--years must be comma-separated integers, got {args.years!r}")
    if not years:
        return fail("--years must not be empty")
    start = time.perf_counter()
    try:
        manifest = synth_to_shards(
            args.out,
            args.pixels,
            timesteps=args.timesteps,
            regions=regions,
            years=years,
            seed=args.seed,
            **({} if args.variety is None else {"variety": args.variety}),
            samples_per_record=args.samples_per_record,
            records_per_shard=args.records_per_shard,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        return fail(str(exc))
    elapsed = time.perf_counter() - start
    size = sum(e["bytes"] for e in manifest["shards"])
    n = manifest["num_samples"]
    print(
        f"wrote {n} synthetic pixels (T={manifest['timesteps']}, {len(manifest['label_counts'])} classes, "
        f"regions {','.join(regions)}, years {','.join(map(str, years))}, seed {args.seed}) in "
        f"{len(manifest['shards'])} shard(s) to {args.out}: {size / 1e6:.2f} MB in {elapsed:.1f} s "
        f"({n / elapsed:,.0f} pixels/s incl. writing)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
