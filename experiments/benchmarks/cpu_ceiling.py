"""How far this CPU can go: the official Presto encoder's speed against the CPU's own matrix-product rates.

Run: ``python experiments/benchmarks/cpu_ceiling.py [--threads 2] [--rounds 7]`` (in ``make bench``).

A speed target for the Presto-sized encoder is a multiply-add rate: at T=12 without Dynamic World the
encoder does ``M`` MACs per pixel (98 tokens, counted by :mod:`cropssl.profiling`, attention included), so
``k`` times the official encoder's px/s needs ``k x M x official px/s`` MACs per second. This times, in
interleaved rounds on the same threads, the official encoder on dense pixels (batch 256,
``../shared/presto/single_file_presto.py`` with the published weights) and large matrix products in fp32,
bfloat16 (fp32 accumulation) and int8 (``torch._int_mm``, int32 accumulation), the best rate each
precision reaches on this CPU (a ceiling no transformer of this size reaches: its products are 128 wide
and its attention works on heads of 16). It prints the fraction of each ceiling that 1x, 2x and 4x the
official encoder would need. Above 1.0, that precision cannot reach the target on this CPU whatever the
code does. Ratios only: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_presto import interleaved, official_embed, official_encoder, official_presto

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.profiling import dense_batch, encoder_macs_per_sample


def products(n: int) -> dict[str, tuple[Callable[[], object], int]]:
    """``[4n, n] x [n, n]`` matrix products per precision, with their multiply-add counts."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4 * n, n, generator=g), torch.randn(n, n, generator=g)
    ab, bb = a.bfloat16(), b.bfloat16()
    ai = torch.randint(-127, 128, (4 * n, n), dtype=torch.int8, generator=g)
    bi = torch.randint(-127, 128, (n, n), dtype=torch.int8, generator=g)
    macs = 4 * n**3
    return {
        "fp32": (lambda: a @ b, macs),
        "bf16": (lambda: ab @ bb, macs),
        "int8": (lambda: torch._int_mm(ai, bi), macs),
    }


def main() -> None:
    """Time the official encoder and the products; print the fraction of each ceiling a target needs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--size", type=int, default=1024, help="n of the [4n, n] x [n, n] products")
    p.add_argument("--batch-size", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    macs_px = encoder_macs_per_sample(PixelTimeSeriesEncoder().eval(), timesteps=12)
    prods = products(a.size)
    contenders: dict[str, Callable[[], object]] = {f"{k} product": fn for k, (fn, _) in prods.items()}
    presto_mod = official_presto()
    batch = dense_batch(a.batch_size, 12)
    if presto_mod is not None:
        enc = official_encoder(presto_mod)
        contenders["official encoder"] = lambda: official_embed(enc, batch)
    with torch.inference_mode():
        times = interleaved(contenders, a.rounds, 3)
    rate = {k: prods[k][1] / statistics.median(times[f"{k} product"]) for k in prods}
    print(f"{a.threads} threads, {a.rounds} interleaved rounds; encoder {macs_px / 1e6:.1f} M MACs/px (T=12)")
    for k, r in rate.items():
        shape = f"[{4 * a.size}, {a.size}] x [{a.size}, {a.size}]"
        print(f"{k} {shape}: {r / 1e9:7.1f} GMAC/s ({r / rate['fp32']:.2f}x fp32)")
    if presto_mod is None:
        return
    px_s = a.batch_size / statistics.median(times["official encoder"])
    need = px_s * macs_px
    print(f"official encoder, dense: {px_s:,.0f} px/s = {need / 1e9:.1f} GMAC/s")
    print(f"{'target':>22s} " + " ".join(f"{'of ' + k + ' ceiling':>16s}" for k in rate))
    for k in (1, 2, 4):
        cells = " ".join(f"{k * need / r:16.2f}" for r in rate.values())
        print(f"{f'{k}x official':>22s} {cells}")


if __name__ == "__main__":
    main()
