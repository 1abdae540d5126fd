"""The table of ``backend_accuracy.sh``: per split and probe, macro F1 of fp32 vs a backend's embeddings.

Δ = backend - fp32 with a 95% paired-bootstrap CI over the test pixels (1,000 resamples, seed 0), and the
share of test pixels whose predicted class is the same. Writes ``OUT/table.md`` and prints it.

Run: ``python experiments/benchmarks/backend_accuracy_table.py OUT BACKEND`` (``OUT`` holds ``torch/``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

SPLITS = ("ea_random", "ea_geo_ssd", "fra_random", "fra_geo_h3")


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    """Macro F1 over the classes that are true or predicted in the test fold (the report's definition)."""
    return float(f1_score(y, p, labels=np.union1d(y, p), average="macro", zero_division=0))


def main(out: Path, candidate: str = "torch-int8") -> str:
    """Build the table from the eight reports under ``out`` (fp32 under ``torch/``, the other backend's)."""
    short = candidate.removeprefix("torch-")
    rows = [
        f"| split | probe | fp32 macro F1 | {short} macro F1 | Δ {short} − fp32 [95% CI] | same class "
        f"| {short} px/s / fp32 |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    rng = np.random.default_rng(0)
    for split in SPLITS:
        pred = {b: pd.read_parquet(out / split / b / "predictions.parquet") for b in ("torch", candidate)}
        doc = {b: json.loads((out / split / b / "results.json").read_text()) for b in pred}
        a, b = pred["torch"], pred[candidate]
        assert (a["sample_id"].to_numpy() == b["sample_id"].to_numpy()).all(), split
        y = a["true"].to_numpy()
        rate = {k: d["encoders"][0]["cost"]["px_per_s"] for k, d in doc.items()}
        for col in [c for c in a.columns if c.endswith((" + logreg", " + knn"))]:
            pa, pb = a[col].to_numpy(), b[col].to_numpy()
            boot = []
            for _ in range(1000):
                i = rng.integers(0, len(y), len(y))
                boot.append(macro_f1(y[i], pb[i]) - macro_f1(y[i], pa[i]))
            lo, hi = np.percentile(boot, [2.5, 97.5])
            fa, fb = macro_f1(y, pa), macro_f1(y, pb)
            reported = {k: {r["name"]: r["macro_f1"] for r in d["results"]}[col] for k, d in doc.items()}
            assert abs(reported["torch"] - fa) < 1e-9 and abs(reported[candidate] - fb) < 1e-9, col
            rows.append(
                f"| {split} (n={len(y)}) | {col.rsplit(' + ', 1)[1]} | {fa:.3f} | {fb:.3f} | "
                f"{fb - fa:+.3f} [{lo:+.3f}, {hi:+.3f}] | {np.mean(pa == pb):.1%} | "
                f"{rate[candidate] / rate['torch']:.2f}x |"
            )
    table = "\n".join(rows) + "\n"
    (out / "table.md").write_text(table)
    return table


if __name__ == "__main__":
    args = sys.argv[1:] or ["experiments/benchmarks/int8_accuracy"]
    print(main(Path(args[0]), *args[1:2]))
