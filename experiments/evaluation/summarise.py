"""One table across the evaluation reports: macro F1 [95% CI] of every method on every split.

python experiments/evaluation/summarise.py > experiments/evaluation/summary.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
REPORTS = ["ea_random", "ea_geo_ssd", "fra_random", "fra_geo_h3"]


def main() -> None:
    """Print a markdown table (rows: methods, columns: reports) to stdout."""
    docs = {
        r: json.loads((HERE / r / "results.json").read_text())
        for r in REPORTS
        if (HERE / r / "results.json").exists()
    }
    methods: list[str] = []
    for doc in docs.values():
        methods += [res["name"] for res in doc["results"] if res["name"] not in methods]
    cells: dict[tuple[str, str], str] = {}
    for r, doc in docs.items():
        best = doc["results"][0]["name"]
        vs_best = doc["significance"].get("vs_best", {})
        for res in doc["results"]:
            ci = res["ci"]
            mark = "**" if res["name"] == best else ""
            below = vs_best.get(res["name"], {}).get("paired_significant", False)
            cells[res["name"], r] = (
                f"{mark}{res['macro_f1']:.3f}{mark} ({ci['low']:.2f}–{ci['high']:.2f}){' ↓' if below else ''}"
            )
    head = [f"{r} (n_test={docs[r]['n_test']})" for r in docs]
    out = ["| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(docs)]
    order = sorted(methods, key=lambda m: -sum(_f1(docs[r], m) for r in docs))
    for m in order:
        out.append(f"| {m} | " + " | ".join(cells.get((m, r), "–") for r in docs) + " |")
    sys.stdout.write("\n".join(out) + "\n")


def _f1(doc: dict, name: str) -> float:
    return next((res["macro_f1"] for res in doc["results"] if res["name"] == name), 0.0)


if __name__ == "__main__":
    main()
