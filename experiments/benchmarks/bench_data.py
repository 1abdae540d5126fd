"""Data path benchmarks: write-time mixing memory on a 1-million-pixel ingest, and stream scaling.

* ``--ingest``: 1,000,000 synthetic pixels written as 100 wide parquet files of 10,000 pixels (the way a
  country's extractions come: many files), then ``cropssl-shard`` on the folder in a child process; prints
  its wall time and peak resident memory (``ru_maxrss``) next to the size of the corpus in memory, so the
  bound is visible: memory holds one input file and one bucket, not the corpus.
* ``--stream``: shard -> batch px/s with 0, 1 and 2 dataloader workers against the raw decode of the same
  records in the same run.

Run: ``python experiments/benchmarks/bench_data.py [--ingest] [--stream] [--pixels 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def write_wide_files(samples, folder: Path, per_file: int) -> int:
    """Write samples as WorldCereal wide parquet files (DN encoding), ``per_file`` rows each.

    Returns:
        The number of files written.

    """
    from cropssl.schema import BAND_INDEX

    wide = {"VV": "SAR-VV", "VH": "SAR-VH", "temperature_2m": "METEO-temperature_mean",
            "total_precipitation": "METEO-precipitation_flux",
            **{b: f"OPTICAL-B{b[1:].zfill(2)}" for b in ("B2", "B3", "B4", "B5", "B6", "B7", "B8")},
            "B11": "OPTICAL-B11", "B12": "OPTICAL-B12",
            "B8A": "OPTICAL-B8A"}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    n = len(samples)
    T = samples.timesteps
    files = 0
    for start in range(0, n, per_file):
        s = samples.select(slice(start, start + per_file))
        cols: dict[str, np.ndarray] = {}
        for band, name in wide.items():
            v = s.x[..., BAND_INDEX[band]].astype(np.float64)
            if band in ("VV", "VH"):
                v = 10 ** ((v + 83) / 20)
            elif band == "temperature_2m":
                v = v * 100
            elif band == "total_precipitation":
                v = v * 1e5
            v = np.where(s.mask[..., BAND_INDEX[band]], 65535, np.clip(np.rint(v), 1, 65534)).astype(
                np.uint16
            )
            for t in range(T):
                cols[f"{name}-ts{t}-10m"] = v[:, t]
        cols["DEM-alt-20m"] = np.rint(s.x[:, 0, BAND_INDEX["elevation"]]).astype(np.uint16)
        cols["DEM-slo-20m"] = np.rint(s.x[:, 0, BAND_INDEX["slope"]]).astype(np.uint16)
        df = pd.DataFrame(cols)
        df["sample_id"] = s.meta["sample_id"].astype(str)
        df["lat"], df["lon"] = s.latlon[:, 0], s.latlon[:, 1]
        df["start_date"] = "2021-01-01"
        df["ewoc_code"] = s.label
        df.to_parquet(folder / f"part-{files:04d}.parquet")
        files += 1
    return files


def bench_ingest(pixels: int, tmp: Path) -> dict[str, str]:
    """Peak memory and time of sharding ``pixels`` pixels from many files."""
    from cropssl.data.synth import generate

    folder = tmp / "inputs"
    t0 = time.perf_counter()
    files = 0
    for k, start in enumerate(range(0, pixels, 100_000)):  # generate in slices: this process stays small
        s = generate(min(100_000, pixels - start), seed=k)
        files += write_wide_files(s, folder / f"g{k:03d}", 10_000)
    gen = time.perf_counter() - t0
    script = tmp / "shard.py"
    script.write_text(
        "import os, resource, time\n"
        "from cropssl.data.build import shard_files\n"
        f"root = {str(folder)!r}\n"
        "t = time.perf_counter()\n"
        "dirs = [os.path.join(root, d) for d in sorted(os.listdir(root))]\n"
        f"m = shard_files(dirs, {str(tmp / 'shards')!r}, log=lambda _: None)\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(time.perf_counter() - t, rss, m['num_samples'], len(m['shards']),\n"
        "      m['write_shuffle']['buckets'])\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    out = proc.stdout.split()
    secs, rss_kb, n, shards, buckets = float(out[0]), int(out[1]), int(out[2]), int(out[3]), int(out[4])
    corpus_mb = n * 12 * 17 * 5 / 1e6  # float32 x + bool mask per value
    return {
        "inputs": f"{files} wide parquet files, {pixels:,} px (written in {gen:.0f} s)",
        "cropssl-shard (write-time shuffle)": (
            f"{n:,} px in {secs:.0f} s ({n / secs:,.0f} px/s), {shards} shards, {buckets} buckets"
        ),
        "peak resident memory": f"{rss_kb / 1024:,.0f} MB (the corpus as arrays: {corpus_mb:,.0f} MB)",
    }


def bench_stream(shards: Path, batch_size: int = 256) -> dict[str, str]:
    """px/s of shard -> batch with 0 / 1 / 2 workers vs the raw decode floor, in one run."""
    import torch

    from cropssl.data.datamodule import PixelStream, make_loader
    from cropssl.data.shards import iter_samples, resolve_shards

    torch.set_num_threads(1)
    urls = resolve_shards(shards)
    t0 = time.perf_counter()
    n = sum(len(s) for s in iter_samples(urls))
    floor = time.perf_counter() - t0
    out = {"raw decode (reference, 1 process)": f"{n / floor:,.0f} px/s"}
    for workers in (0, 1, 2):
        stream = PixelStream(shards, batch_size=batch_size, shuffle_buffer=4096, seed=0)
        it = iter(make_loader(stream, workers))
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        m = sum(len(b) for b in it)
        dt = time.perf_counter() - t0
        rate = m / dt
        out[f"shard->batch, {workers} worker(s)"] = f"{rate:,.0f} px/s = {rate / (n / floor):.2f}x raw decode"
    return out


def main() -> None:
    """Print the tables."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pixels", type=int, default=1_000_000)
    p.add_argument("--ingest", action="store_true")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--shards", default=None, help="shard dir for --stream (default: the ingest's output)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        if args.ingest or not args.stream:
            rows.update(bench_ingest(args.pixels, tmp_p))
        if args.stream or not args.ingest:
            shards = Path(args.shards) if args.shards else tmp_p / "shards"
            if not shards.exists():
                from cropssl.data.shard_writer import write_shards
                from cropssl.data.synth import generate

                write_shards(generate(50_000, seed=0), shards, records_per_shard=4)
            rows.update(bench_stream(shards))
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"{k:<{width}}  {v}")
    print(f"(this process: peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
