r"""``cropssl-predict``: map a NetCDF cube with a head fitted by ``cropssl-evaluate`` (``save_heads=true``).

Example::

    cropssl-predict --encoder exports/mae-v1 --head evals/fra/heads/mae-v1__logreg.safetensors \
        ../shared/data/worldcereal/2021_BEL_31UFS_month_cube_100x100.nc --out bel_map.nc

What it writes and checks: :mod:`cropssl.predict`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cropssl.predict import PredictError, predict_cube, resolve_head_encoder

__all__ = ["build_parser", "main", "resolve_head_encoder"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from cropssl.backends import add_backend_argument

    p = argparse.ArgumentParser(prog="cropssl-predict", description=__doc__.split("\n")[0])
    p.add_argument("input", help="NetCDF cube (t, y, x) with WorldCereal band variables and a crs variable")
    p.add_argument("--head", required=True, help="head written by cropssl-evaluate save_heads=true")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read a pickled (.joblib) head of an earlier cropssl; a pickle can run code: your own only",
    )
    p.add_argument(
        "--encoder",
        default=None,
        help="encoder the head was fitted on: export dir, .ckpt or presto (default: the head's own)",
    )
    p.add_argument("--out", required=True, help="output NetCDF (.nc)")
    p.add_argument("--png", default=None, help="map PNG (default: OUT with suffix .png)")
    p.add_argument("--batch-size", type=int, default=1024, help="pixels per chunk (default 1024)")
    p.add_argument(
        "--allow-missing-bands",
        action="store_true",
        help="predict even if the cube lacks bands the head was fitted with (they are masked as missing)",
    )
    add_backend_argument(p, "an export-dir --encoder")
    p.add_argument(
        "--reference", default=None, help="PATH:VARIABLE of a reference product layer to compare with"
    )
    p.add_argument(
        "--reference-classes",
        default=None,
        help="CODE=NAME,... of the reference layer, e.g. 100=temporary_crops,0=other (other codes excluded)",
    )
    p.add_argument("--start", default=None, help="first month of the window, YYYY-MM (with --end)")
    p.add_argument("--end", default=None, help="last month of the window, YYYY-MM (with --start)")
    p.add_argument("--season-end-month", type=int, default=None, help="end the window on this month (1-12)")
    p.add_argument(
        "--min-valid-steps",
        type=int,
        default=1,
        help="fewest timesteps with Sentinel-1/2 data a pixel needs to get a class (else no-data; default 1)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument(
        "--area-km2",
        type=float,
        default=580_000,
        help="area whose mapping cost to print, km² at 10 m (default 580,000: Kenya, 5.8e9 px)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-predict``; returns the exit code (2 on input errors)."""
    args = build_parser().parse_args(argv)
    from cropssl.data.ingest import InputFormatError
    from cropssl.io.atomic import OutputError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        summary = predict_cube(
            args.head,
            args.input,
            args.out,
            encoder=args.encoder,
            batch_size=args.batch_size,
            png=args.png,
            allow_missing_bands=args.allow_missing_bands,
            progress=not args.quiet,
            min_valid_steps=args.min_valid_steps,
            window=(args.start, args.end) if args.start or args.end else None,
            season_end_month=args.season_end_month,
            backend=args.backend,
            reference=args.reference,
            reference_classes=args.reference_classes,
            trust_pickle=args.trust_pickle,
        )
    except (PredictError, InputFormatError, FileNotFoundError, ValueError, OutputError) as exc:
        print(f"cropssl-predict: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['out']} ({summary['shape'][0]} x {summary['shape'][1]}, {summary['n_pixels']} px in "
        f"{summary['seconds']:.1f} s, {summary['px_per_s']:.0f} px/s) and {summary['png']}; classes "
        f"{summary['class_counts']}; no-data {summary['n_nodata']} px"
    )
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if summary["agreement"]:
        a = summary["agreement"]
        print(
            f"agreement with {args.reference}: overall accuracy {a['overall_accuracy']:.3f}, kappa "
            f"{a['kappa']:.3f} over {a['n_compared']} px (excluded: reference codes "
            f"{a['n_excluded_reference']}, {a['n_nodata_prediction']} no-data px); IoU "
            + ", ".join(f"{c} {v:.2f}" for c, v in a["iou"].items())
        )
    if summary["px_per_s"] and summary["px_per_s"] != float("inf"):
        import torch

        from cropssl.evaluation.encoders import map_core_hours

        threads = torch.get_num_threads()
        area = args.area_km2 * 1e4
        hours = map_core_hours(area, summary["px_per_s"], threads)
        print(
            f"cost of a map at this speed ({threads} thread(s)): {hours:.3g} core-hours for "
            f"{args.area_km2:g} km² at 10 m ({area:.3g} px)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
