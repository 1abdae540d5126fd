"""``cropssl-embed``: embed pixel time series with an exported encoder (CPU, no training stack).

The output format follows the suffix of ``--out`` (``.parquet``: ids + ``emb_*`` columns; ``.npy``: the
embeddings, ids in ``<stem>.ids.parquet``); see :mod:`cropssl.embed`.

Examples::

    cropssl-embed --encoder exports/mae-v1 work/shards/eval --out emb.parquet
    cropssl-embed --encoder exports/mae-v1 field.parquet cube.nc --out emb.npy --batch-size 2048
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cropssl.embed import EmbedError, embed_inputs, ids_path

__all__ = ["build_parser", "embed_inputs", "ids_path", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from cropssl.backends import add_backend_argument

    p = argparse.ArgumentParser(prog="cropssl-embed", description=__doc__.split("\n")[0])
    p.add_argument("--encoder", required=True, help="export directory written by cropssl-export")
    p.add_argument("inputs", nargs="+", help="shard directories, WorldCereal parquet files, NetCDF cubes")
    p.add_argument(
        "--out", required=True, help="output .parquet (ids + emb_* columns) or .npy (+ .ids.parquet)"
    )
    p.add_argument("--batch-size", type=int, default=1024, help="samples per forward pass (default 1024)")
    p.add_argument(
        "--timesteps",
        type=int,
        default=None,
        help="months per sample for parquet / NetCDF inputs (default 12 or the encoder's max_T if smaller)",
    )
    p.add_argument(
        "--min-valid-steps",
        type=int,
        default=1,
        help="fewest timesteps with Sentinel-1/2 data a sample needs (else NaN embedding, valid=false)",
    )
    add_backend_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-embed``; returns the exit code (2 on errors)."""
    args = build_parser().parse_args(argv)
    from cropssl.backends import BackendError
    from cropssl.data.ingest import InputFormatError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from cropssl.data.shards import ShardError
    from cropssl.io.atomic import OutputError

    try:
        summary = embed_inputs(
            args.encoder,
            args.inputs,
            args.out,
            batch_size=args.batch_size,
            timesteps=args.timesteps,
            progress=not args.quiet,
            min_valid_steps=args.min_valid_steps,
            backend=args.backend,
        )
    except (
        EmbedError,
        InputFormatError,
        ShardError,
        FileNotFoundError,
        ValueError,
        OutputError,
        BackendError,
    ) as exc:
        print(f"cropssl-embed: error: {exc}", file=sys.stderr)
        return 2
    extra = f" (ids in {summary['ids']})" if summary["ids"] else ""
    setup = summary.get("setup_seconds") or 0.0
    setup_note = f"; {setup:.1f} s of it built the int8 graph" if setup else ""
    print(
        f"wrote {summary['n']} x {summary['dim']} embeddings to {summary['out']}{extra} in "
        f"{summary['seconds']:.1f} s ({summary['px_per_s']:.0f} px/s{setup_note})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
