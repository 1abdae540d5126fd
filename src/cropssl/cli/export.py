"""``cropssl-export``: export the encoder of a pre-training checkpoint for use without the training stack.

Examples::

    cropssl-export runs/2026-11-25_mae/checkpoints/last.ckpt --out exports/mae-v1
    cropssl-export last.ckpt --out exports/mae-v1 --format safetensors,onnx --no-continue-bundle --overwrite
    cropssl-export presto --out exports/presto    # the published Presto weights, with the same fast paths
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="cropssl-export", description=__doc__.split("\n")[0])
    p.add_argument(
        "checkpoint", help="checkpoint of a cropssl-pretrain run (runs/<run>/checkpoints/last.ckpt)"
    )
    p.add_argument("--out", required=True, help="export directory to create")
    p.add_argument(
        "--format",
        default="safetensors,torchscript,onnx,onnx-int8",
        help="comma-separated formats among safetensors, torchscript, onnx, onnx-int8 (safetensors is always "
        "written; onnx-int8 needs onnx)",
    )
    p.add_argument(
        "--no-continue-bundle",
        action="store_true",
        help="do not write continue.safetensors (full method state for continued pre-training)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing export directory")
    p.add_argument("--teacher", action="store_true", help="export the EMA teacher's encoder (MoCo/BYOL/DINO)")
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra metric to record in config.json and the model card (repeatable)",
    )
    p.add_argument("--onnx-opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument(
        "--onnx-exporter",
        choices=["auto", "torchscript", "dynamo"],
        default="auto",
        help="ONNX exporter: auto = the TorchScript-based one, then the torch.export-based one if it fails",
    )
    return p


def _parse_metrics(items: Sequence[str]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--metric expects NAME=VALUE, got {item!r}")
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-export``; returns the exit code (2 on errors)."""
    args = build_parser().parse_args(argv)
    from cropssl.export import ExportError, export_encoder

    start = time.perf_counter()
    try:
        config = export_encoder(
            args.checkpoint,
            args.out,
            formats=[f for f in args.format.split(",") if f.strip()],
            metrics=_parse_metrics(args.metric),
            continue_bundle=not args.no_continue_bundle,
            overwrite=args.overwrite,
            teacher=args.teacher,
            onnx_opset=args.onnx_opset,
            onnx_exporter=args.onnx_exporter,
        )
    except (ExportError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"cropssl-export: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    size = sum((out / f).stat().st_size for f in config["files"] if (out / f).exists())
    print(
        f"exported the {config['ssl_method']} encoder (d={config['embed_dim']}, "
        f"T<={config['inputs']['timesteps']['max']}) of {args.checkpoint} to {out} in "
        f"{time.perf_counter() - start:.1f} s: {', '.join(config['files'])} ({size / 1e6:.2f} MB)"
    )
    if config["formats_failed"]:
        print(f"formats that failed: {json.dumps(config['formats_failed'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
