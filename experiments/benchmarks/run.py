"""Benchmarks of the foundation: ingest, shard size, shard->batch throughput, encoder speed and MACs.

Run with ``make bench`` (or ``python experiments/benchmarks/run.py``); training steps and embedding
against the official Presto code are in ``vs_presto.py``, ingest per layout in ``bench_ingest.py``, the
write-time shuffle's memory and the stream's worker scaling in ``bench_data.py``. Every speed is printed
next to a reference measured in the same run, as a ratio, so numbers from different machines compare:

* shard->batch throughput vs. the I/O floor (reading and decoding the same tar records, no shuffle,
  no normalisation);
* encoder px/s (masked, key-padding attention) vs. the same encoder with no mask at all (the dense
  floor: what attention over all tokens costs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cropssl.data.datamodule import PixelStream
from cropssl.data.shard_writer import write_shards
from cropssl.data.shards import iter_samples, resolve_shards
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.schema import Batch

REAL = (
    "2022_FRA_LPIS_month.geoparquet",
    "2017_east_africa_public_month_wide.parquet",
    "2021_BEL_31UFS_month_cube_100x100.nc",
)


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_ingest(data: Path, out: Path) -> tuple[dict, Path]:
    """Ingest each real file (or generate synthetic data) and write shards."""
    results: dict = {}
    if all((data / f).exists() for f in REAL):
        from cropssl.data.ingest import read_input
        from cropssl.schema import PixelSamples

        parts = []
        for f in REAL:
            t0 = time.perf_counter()
            s, _ = read_input(data / f, 12)
            dt = time.perf_counter() - t0
            parts.append(s)
            results[f"ingest {f}"] = f"{len(s)} px in {dt:.2f} s ({len(s) / dt:,.0f} px/s)"
        samples = PixelSamples.concat(parts)
        kind = "real"
    else:
        from cropssl.data.synth import generate

        t0 = time.perf_counter()
        samples = generate(20000, seed=0)
        dt = time.perf_counter() - t0
        results["synthetic generation"] = f"{len(samples)} px in {dt:.2f} s ({len(samples) / dt:,.0f} px/s)"
        kind = "synthetic"
    t0 = time.perf_counter()
    manifest = write_shards(samples, out, records_per_shard=8)
    dt = time.perf_counter() - t0
    size = sum(e["bytes"] for e in manifest["shards"])
    results["data"] = kind
    results["shard write"] = f"{len(samples)} px in {dt:.2f} s"
    results["shard size per 1,000 px"] = f"{size / len(samples) * 1000 / 1e6:.3f} MB"
    return results, out


def bench_stream(shards: Path, batch_size: int = 256) -> dict:
    """Pixels/s from shards to normalised batches vs the raw decode floor."""
    urls = resolve_shards(shards)
    n = sum(len(s) for s in iter_samples(urls))
    floor = timed(lambda: sum(len(s) for s in iter_samples(urls)))
    stream = PixelStream(shards, batch_size=batch_size, shuffle_buffer=4096, seed=0)
    full = timed(lambda: sum(len(b) for b in stream))
    return {
        "raw decode (reference)": f"{n / floor:,.0f} px/s",
        "shard->batch (shuffle 4096, normalise, batch 256)": f"{n / full:,.0f} px/s",
        "shard->batch time / raw decode time": f"{full / floor:.2f}x",
    }


def bench_encoder(shards: Path, batch_size: int = 256) -> dict:
    """Encoder inference px/s at T=12 on real batches vs the unmasked dense floor; MACs per pixel."""
    from cropssl.profiling import flop_counter

    torch.set_num_threads(torch.get_num_threads())
    enc = PixelTimeSeriesEncoder().eval()
    batch = next(iter(PixelStream(shards, batch_size=batch_size, shuffle_buffer=0)))
    dense = batch.replace(
        mask=torch.zeros_like(batch.mask), dynamic_world=torch.zeros_like(batch.dynamic_world)
    )
    with torch.inference_mode():
        enc(batch)
        t_masked = timed(lambda: enc(batch), 5)
        t_dense = timed(lambda: enc(dense), 5)
        one = Batch.from_samples(next(iter_samples(resolve_shards(shards))).select(slice(0, 1)))
        one = one.replace(mask=torch.zeros_like(one.mask))
        with flop_counter() as fc:
            enc(one)
    macs = fc.get_total_flops() / 2
    by_op = ", ".join(f"{k}: {v / 2e6:.1f} M" for k, v in fc.get_flop_counts()["Global"].items())
    by_op = by_op.replace("aten._scaled_dot_product_flash_attention_for_cpu", "attention (QK^T, AV)")
    n_tokens = len(enc.token_layout(12))
    return {
        "encoder": "d=128 depth=2 heads=8 mlp=4 (Presto size), T=12, batch 256, torch threads "
        f"{torch.get_num_threads()}",
        "encoder px/s (masked batch)": f"{batch_size / t_masked:,.0f}",
        "encoder px/s (no missing values, reference)": f"{batch_size / t_dense:,.0f}",
        "masked / reference time": f"{t_masked / t_dense:.2f}",
        "MACs per pixel (all tokens present, torch.utils.flop_counter)": f"{macs / 1e6:.1f} M",
        "  counted ops": f"{by_op} ({n_tokens} tokens at T=12, Dynamic World tokens included)",
    }


def main() -> None:
    """Run all benchmarks and print a table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/worldcereal")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        r, shards = bench_ingest(Path(args.data), Path(tmp) / "shards")
        results.update(r)
        results.update(bench_stream(shards))
        results.update(bench_encoder(shards))
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
