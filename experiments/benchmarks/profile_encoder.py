"""Where the time of one eager embedding pass goes: ``torch.profiler`` over the Presto-sized encoder.

Run: ``python experiments/benchmarks/profile_encoder.py [--batch-size 256] [--threads 2] [--masks real]``.

Prints the operators by self CPU time (the top ``--top``) and the share of each kind of work: matrix
products (the linear layers), attention (the SDPA kernel), normalisation, activations, the token building
(embeddings, positional / month / channel encodings, concatenation) and the rest. ``--masks real`` uses
the missing-value masks of the reference pixels in ``../shared/presto/reference_embeddings.npz`` (tokens
are dropped, so the shares move), the default a dense batch (every token present). Shares, not absolute
times, are what to read on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.profiling import dense_batch

KINDS = (
    ("matmul (linear layers)", ("addmm", "mm", "matmul", "linear", "bmm", "baddbmm")),
    ("attention (SDPA)", ("attention", "softmax", "_flash", "sdpa")),
    ("normalisation", ("layer_norm", "native_layer_norm")),
    ("activation", ("gelu", "silu", "relu")),
    ("token building", ("embedding", "cat", "index", "gather", "sin", "cos", "repeat", "expand", "stack")),
)


def kind_of(name: str) -> str:
    """The kind of work an operator name belongs to (``other`` when none matches)."""
    n = name.lower()
    for kind, keys in KINDS:
        if any(k in n for k in keys):
            return kind
    return "other"


def main() -> None:
    """Profile and print the breakdown."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--timesteps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passes", type=int, default=10)
    p.add_argument("--masks", choices=["dense", "real"], default="dense")
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = PixelTimeSeriesEncoder().eval()  # Presto's sizes: d=128, depth 2, 8 heads, MLP 4
    if a.masks == "dense":
        batch = dense_batch(a.batch_size, a.timesteps)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from vs_presto import reference_batch  # type: ignore[import-not-found]

        batch = reference_batch(a.batch_size)[0]
    with torch.inference_mode():
        for _ in range(3):
            enc(batch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(a.passes):
                enc(batch)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"Presto-sized encoder, {a.masks} batch {a.batch_size} x T={a.timesteps}, {a.threads} threads, "
        f"{a.passes} passes: {total / 1e3 / a.passes:.1f} ms self CPU per pass "
        f"({a.batch_size * a.passes / (total / 1e6):.0f} px/s of operator time)"
    )
    print("\n| operator | self CPU % | calls/pass |\n|---|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.top]:
        print(f"| `{e.key}` | {100 * e.self_cpu_time_total / total:.1f} | {e.count / a.passes:.0f} |")
    share: dict[str, float] = defaultdict(float)
    for e in events:
        share[kind_of(e.key)] += e.self_cpu_time_total
    print("\n| kind of work | self CPU % |\n|---|---:|")
    for kind, t in sorted(share.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {100 * t / total:.1f} |")


if __name__ == "__main__":
    main()
