"""Speed of the synthetic generator vs. the floor of merely allocating and filling its output arrays.

Run from the project root::

    python experiments/benchmarks/bench_synth.py --pixels 1000000 --timesteps 12

Both numbers are measured in the same run (best of ``--repeat``), so their ratio compares across machines.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cropssl.data.synth import CHUNK, generate
from cropssl.schema import NUM_BANDS


def fill_random(n: int, timesteps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The floor: allocate the arrays of a PixelSamples and fill them with random numbers, chunk by chunk."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, timesteps, NUM_BANDS), np.float32)
    mask = np.empty((n, timesteps, NUM_BANDS), bool)
    month = np.empty((n, timesteps), np.int8)
    latlon = np.empty((n, 2), np.float32)
    label = np.empty(n, np.int64)
    year = np.empty(n, np.int16)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        m = stop - start
        x[start:stop] = rng.random((m, timesteps, NUM_BANDS), dtype=np.float32)
        mask[start:stop] = rng.random((m, timesteps, NUM_BANDS), dtype=np.float32) < 0.3
        month[start:stop] = rng.integers(0, 12, (m, timesteps), dtype=np.int8)
        latlon[start:stop] = rng.random((m, 2), dtype=np.float32)
        label[start:stop] = rng.integers(0, 10, m)
        year[start:stop] = rng.integers(2019, 2023, m, dtype=np.int16)
    return {"x": x, "mask": mask, "month": month, "latlon": latlon, "label": label, "year": year}


def best_time(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pixels", type=int, default=1_000_000)
    p.add_argument("--timesteps", type=int, default=12)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    n, T = args.pixels, args.timesteps
    t_gen = best_time(lambda: generate(n, timesteps=T, seed=0), args.repeat)
    t_ref = best_time(lambda: fill_random(n, T), args.repeat)
    print(f"pixels={n:,} timesteps={T} chunk={CHUNK} (best of {args.repeat})")
    print(f"synthetic generation: {t_gen:7.2f} s  {n / t_gen:12,.0f} px/s")
    print(f"alloc + random fill:  {t_ref:7.2f} s  {n / t_ref:12,.0f} px/s   (reference, same run)")
    print(f"generation costs {t_gen / t_ref:.1f}x the reference (ratio of times)")


if __name__ == "__main__":
    main()
