"""One table and one curve plot of the 1,000-step family comparison, from its separate result folders.

The runs were made by several invocations of ``experiments/ssl_quality/run.py`` with the same data, encoder,
budget, seeds and probes (commands in README.md); each folder also holds the random-init encoders and the
raw features of the same pixels, which must agree across folders (checked here, else the merge is refused).

Run: ``python experiments/compare_families/table_1000.py`` (writes ``table_1000.md`` and ``curves_1000.png``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ssl_quality"))
from run import markdown, plot_curves  # noqa: E402

FOLDERS = ("results_1000", "results_1000b", "results_1000_dino")
BASELINES = ("raw features", "random init")


def merge(folders: list[Path]) -> dict[str, Any]:
    """The folders' results as one document (baselines from the first; every folder's must match)."""
    docs = [json.loads((f / "results.json").read_text()) for f in folders]
    merged = json.loads(json.dumps(docs[0]))
    for f, doc in zip(folders[1:], docs[1:], strict=True):
        for name, sp in doc["results"]["splits"].items():
            target = merged["results"]["splits"][name]["encoders"]
            for enc, per_seed in sp["encoders"].items():
                if enc in BASELINES:
                    got = [[r[k]["macro_f1"] for k in ("logreg", "knn")] for r in per_seed]
                    want = [[r[k]["macro_f1"] for k in ("logreg", "knn")] for r in target[enc]]
                    if got != want:
                        raise SystemExit(f"{f}: {enc} on {name} differs from {folders[0]} ({got} vs {want})")
                else:
                    target[enc] = per_seed
        merged["curves"].update(doc["curves"])
        merged["pretrain_wall_s"].update(doc["pretrain_wall_s"])
    return merged


def main() -> None:
    folders = [HERE / f for f in FOLDERS if (HERE / f / "results.json").exists()]
    missing = sorted(set(FOLDERS) - {f.name for f in folders})
    doc = merge(folders)
    note = f"\n(Folders not found, left out: {', '.join(missing)}.)\n" if missing else ""
    text = f"Merged from {', '.join(f.name for f in folders)}.\n\n" + markdown(doc) + note
    (HERE / "table_1000.md").write_text(text)
    plot_curves(doc["curves"], HERE / "curves_1000.png")
    print(text)


if __name__ == "__main__":
    main()
