"""``cropssl-demo``: shard the bundled data and pre-train MAE end to end on CPU (what ``make demo`` runs).

Uses the real WorldCereal files when they are present (``--data``, default ``../shared/data/worldcereal``)
and the bundled synthetic generator otherwise, and says which.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cropssl.demo import compare_probes, prepare_shards


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-demo``."""
    p = argparse.ArgumentParser(prog="cropssl-demo", description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default="../shared/data/worldcereal", help="folder with the real WorldCereal files"
    )
    p.add_argument("--work", default="work", help="work directory for shards")
    p.add_argument("--steps", type=int, default=300, help="pre-training steps")
    p.add_argument("--batch-size", type=int, default=128, help="pixels per step")
    p.add_argument("--pixels", type=int, default=20000, help="synthetic pixels when the real data is absent")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for cropssl-pretrain")
    args = p.parse_args(argv)
    start = time.time()
    kind, pretrain, labelled = prepare_shards(Path(args.data), Path(args.work), args.pixels)
    where = (
        f"real WorldCereal files from {args.data}" if kind == "real" else "the bundled synthetic generator"
    )
    print(f"data: using {kind.upper()} data ({where}): {pretrain}")
    run_dir = Path("runs") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}_demo_mae"
    cmd = [
        sys.executable,
        "-m",
        "cropssl.cli.pretrain",
        "method=mae",
        f"data.train={pretrain}",
        "callbacks=monitors",
        f"callbacks.probe.labelled_shards={labelled}",
        f"trainer.max_steps={args.steps}",
        f"data.batch_size={args.batch_size}",
        f"run_dir={run_dir}",
        "name=demo_mae",
        *args.overrides,
    ]
    print("running:", " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    print("\n=== cropssl demo finished in %.0f s ===" % (time.time() - start))
    print(f"data:        {kind} ({pretrain})")
    print(f"labelled:    {labelled}")
    print(f"run dir:     {run_dir}")
    print(f"checkpoint:  {summary.get('checkpoint')}")
    print(f"loss curve:  {summary.get('loss_curve')}")
    print(f"loss:        first {summary.get('first_loss'):.4f} -> last {summary.get('last_loss'):.4f}")
    if "monitor/knn_f1" in summary:
        print(
            f"monitors:    kNN macro-F1 {summary['monitor/knn_f1']:.3f}, linear-probe macro-F1 "
            f"{summary.get('monitor/linear_f1', float('nan')):.3f}, "
            f"RankMe {summary.get('monitor/rankme', 0):.1f} (metrics.csv has them over time)"
        )
    rows = compare_probes(Path(summary["checkpoint"]), labelled)
    print("what pre-training did (same probe, same labelled pixels, macro F1):")
    for name, m in rows.items():
        print(f"  {name:<28} kNN {m['monitor/knn_f1']:.3f}   linear {m['monitor/linear_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
