"""CPU inference speed of an exported encoder: eager PyTorch vs TorchScript vs ONNX Runtime.

Usage::

    python experiments/benchmarks/bench_export.py                      # Presto-sized random encoder
    python experiments/benchmarks/bench_export.py --export exports/mae-v1
    python experiments/benchmarks/bench_export.py --encoder tiny --batch 256 --timesteps 12

Without ``--export`` a randomly initialised encoder of the chosen size (``configs/encoder/<name>.yaml``)
is wrapped in a minimal cropssl checkpoint and exported with :func:`cropssl.export.export_encoder`, so
the timed models are exactly what ``cropssl-export`` writes. Every format runs the same inputs (T=12,
batch 256, ~30% of Sentinel-2 timesteps missing) under ``torch.inference_mode`` with the same thread count;
the formats are timed in interleaved rounds (one call of each per round, so background load hits all of
them alike); speeds are px/s (best and median of ``--repeat`` rounds) with ratios vs. eager in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.export import INPUT_NAMES, example_inputs, export_encoder, load_encoder

ROOT = Path(__file__).resolve().parents[2]


def make_export(encoder_name: str, out: Path) -> Path:
    """Export a random encoder of ``configs/encoder/<encoder_name>.yaml`` through the real export path."""
    cfg = yaml.safe_load((ROOT / "configs" / "encoder" / f"{encoder_name}.yaml").read_text())
    cfg.pop("_target_", None)
    torch.manual_seed(0)
    enc = PixelTimeSeriesEncoder(**cfg)
    ckpt = out / "random.ckpt"
    torch.save(
        {
            "state_dict": {f"encoder.{k}": v for k, v in enc.state_dict().items()},
            "global_step": 0,
            "cropssl": {"method": "random-init", "encoder_config": enc.config, "lineage": []},
        },
        ckpt,
    )
    export_encoder(ckpt, out / "export", continue_bundle=False)
    return out / "export"


def interleaved_rates(
    fns: dict[str, Any], n: int, repeat: int, warmup: int = 2
) -> dict[str, tuple[float, float]]:
    """Best and median px/s of each function, timing one call of each per round (fair under noisy load)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: (n / min(v), n / statistics.median(v)) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=Path, default=None, help="export dir (default: export a random encoder)")
    p.add_argument("--encoder", default="presto", help="encoder config used without --export (presto | tiny)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--timesteps", type=int, default=12)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (torch and ORT)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        export_dir = args.export or make_export(args.encoder, Path(tmp))
        config = json.loads((export_dir / "config.json").read_text())
        enc = load_encoder(export_dir)
        inputs = example_inputs(enc, args.batch, args.timesteps, seed=1)
        feeds = {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True)}
        fns: dict[str, Any] = {}
        diffs: dict[str, float] = {}
        with torch.inference_mode():
            ref = enc(*inputs).numpy()
        fns["eager PyTorch"] = lambda: enc(*inputs)
        diffs["eager PyTorch"] = 0.0

        ts_path = export_dir / "encoder.torchscript.pt"
        if ts_path.exists():
            ts = torch.jit.load(str(ts_path))
            with torch.inference_mode():
                diffs["TorchScript"] = float(np.abs(ts(*inputs).numpy() - ref).max())
            fns["TorchScript"] = lambda: ts(*inputs)

        onnx_path = export_dir / "encoder.onnx"
        if onnx_path.exists():
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            name = f"ONNX Runtime {ort.__version__}"
            diffs[name] = float(np.abs(sess.run(None, feeds)[0] - ref).max())
            fns[name] = lambda: sess.run(None, feeds)
        with torch.inference_mode():
            rates = interleaved_rates(fns, args.batch, args.repeat)

    enc_cfg = config["encoder_config"]
    print(
        f"encoder d={enc_cfg['d']} depth={enc_cfg['depth']} heads={enc_cfg['heads']} "
        f"mlp_ratio={enc_cfg['mlp_ratio']} ({sum(p.numel() for p in enc.parameters()):,} params), "
        f"T={args.timesteps}, batch {args.batch}, {threads} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}; "
        f"ONNX exporter: {config.get('onnx', {}).get('exporter')}"
    )
    print()
    print("| format | px/s (best) | vs eager | px/s (median) | vs eager | max abs diff vs eager |")
    print("|---|---:|---:|---:|---:|---:|")
    eager_best, eager_med = rates["eager PyTorch"]
    for name, (best, med) in rates.items():
        print(
            f"| {name} | {best:,.0f} | {best / eager_best:.2f}x | {med:,.0f} | {med / eager_med:.2f}x "
            f"| {diffs[name]:.1e} |"
        )


if __name__ == "__main__":
    main()
