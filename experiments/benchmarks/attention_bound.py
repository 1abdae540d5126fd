"""What bounds the attention of the Presto-sized encoder on a CPU: its products, or its softmax?

Run: ``python experiments/benchmarks/attention_bound.py [--threads 2] [--rounds 7]``.

At Presto's sizes (d=128, 8 heads of 16, 98 tokens at T=12 without Dynamic World, 2 blocks) each block's
attention does 2 x 98 x 98 x 128 = 2.5 M multiply-adds per pixel but also 8 x 98 x 98 = 77 k
exponentials, one per 32 multiply-adds: with a head size of 16 the softmax, not the products, may set the
pace. This times, on 32-pixel chunks (what the eager encoder runs, ``cropssl.encoder``) and per pixel for
both blocks, in interleaved rounds (median): the fused attention kernel (``scaled_dot_product_attention``,
fp32 and bf16), its two batched products alone (``q @ k^T``, ``p @ v``), the softmax alone, ``exp`` alone
over the same number of scores, and for scale the block's linear layers (qkv, projection, MLP) in fp32;
with ``--flex`` also Inductor's compiled CPU flex-attention kernel in fp32 and bf16.
Read the shares, not the absolute times, on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def contenders(
    chunk: int, tokens: int, d: int, heads: int, flex: bool = False
) -> dict[str, Callable[[], object]]:
    """The operations to time, on one chunk of ``chunk`` pixels (one block)."""
    g = torch.Generator().manual_seed(0)
    hd = d // heads
    q, k, v = (torch.randn(chunk, heads, tokens, hd, generator=g) for _ in range(3))
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    scores = torch.randn(chunk, heads, tokens, tokens, generator=g)
    x = torch.randn(chunk * tokens, d, generator=g)
    qkv, proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
    fc1, fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def linears() -> object:
        qkv(x)
        proj(x)
        return fc2(F.gelu(fc1(x)))

    ops: dict[str, Callable[[], object]] = {
        "fused attention fp32": lambda: F.scaled_dot_product_attention(q, k, v),
        "fused attention bf16": lambda: F.scaled_dot_product_attention(qb, kb, vb),
    }
    if flex:  # Inductor's CPU flex-attention template (compiled here: a C++ compiler is needed)
        from torch.nn.attention.flex_attention import flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        ops["flex attention fp32 (compiled)"] = lambda: compiled(q, k, v)
        ops["flex attention bf16 (compiled)"] = lambda: compiled(qb, kb, vb)
    return ops | {
        "q @ k^T and p @ v only (fp32)": lambda: (q @ k.transpose(-1, -2)) @ v,
        "softmax only (fp32)": lambda: scores.softmax(-1),
        "exp only (fp32)": lambda: scores.exp(),
        "linear layers of the block (fp32)": linears,
    }


def main() -> None:
    """Time every contender in interleaved rounds and print microseconds per pixel (both blocks)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--tokens", type=int, default=98)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--flex", action="store_true", help="also time torch.compile'd flex_attention")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ops = contenders(a.chunk, a.tokens, d=128, heads=8, flex=a.flex)
    times: dict[str, list[float]] = {name: [] for name in ops}
    with torch.inference_mode():
        for _ in range(a.rounds):
            for name, fn in ops.items():
                times[name].append(timed(fn, a.repeats))
    per_px = {name: statistics.median(t) / a.chunk * a.depth * 1e6 for name, t in times.items()}
    fused = per_px["fused attention fp32"]
    print(f"{a.tokens} tokens, 8 heads of 16, {a.depth} blocks, chunks of {a.chunk} px, {a.threads} threads")
    print(f"{'operation':36s} {'us/px':>8s} {'vs fused fp32':>14s}")
    for name, us in per_px.items():
        print(f"{name:36s} {us:8.1f} {us / fused:13.2f}x")


if __name__ == "__main__":
    main()
