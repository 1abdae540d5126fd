"""Is a linear-probe deficit the probe's regularisation? Logistic regression of each encoder at several C.

The protocol's linear probe (``run.py``) uses C=1 on standardised embeddings for every encoder. An
embedding with few informative directions (low RankMe) and many near-constant ones gets those amplified
by the standardisation, which a fixed C may over- or under-regularise differently per encoder. This
diagnostic refits the probe of each encoder at every C in ``--cs`` and reports the test macro F1 at each
and at each encoder's best C (an oracle choice that favours every encoder alike: a family that stays
below the random-init encoder even at its own best C does not owe its deficit to the probe's
regularisation), against the random-init encoder and the raw features on exactly the same pixels.
(Choosing C by inner cross-validation was the first design; at 20-130 s per fit on this machine it did not
fit the budget, and the oracle answers the question more directly.)

Run (on the runs of a ``run.py`` folder, after it finished)::

    python experiments/ssl_quality/probe_strength.py experiments/ssl_quality/results_current

Writes ``probe_strength.json`` and ``probe_strength.md`` into that folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HELD_OUT, raw_features, splits


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes of ``y`` (the protocol's definition)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0))


def logreg_f1(X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, c: float) -> float:
    """Macro F1 on ``te`` of the protocol's standardised logistic regression fitted on ``tr`` at ``C=c``."""
    from cropssl.evaluation.probes import fit_predict

    classes = np.unique(y[tr])
    yi = np.searchsorted(classes, y)
    te = te[np.isin(y[te], classes)]
    pred, _ = fit_predict("logreg", X[tr], yi[tr], X[te], n_classes=len(classes), C=c, max_iter=2000)
    return macro_f1(yi[te], pred)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Probe every encoder of the folder at every C; write the tables."""
    import torch

    from cropssl.data.shards import read_shards
    from cropssl.encoder import PixelTimeSeriesEncoder
    from cropssl.evaluation.encoders import embed_samples, load_checkpoint_encoder

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a run.py --out folder (results.json, data/, runs/)")
    p.add_argument("--cs", default="0.01,0.1,1,10")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cs = [float(c) for c in args.cs.split(",")]
    doc = json.loads((args.folder / "results.json").read_text())
    samples = read_shards(args.folder / "data" / "labelled")
    samples = samples.select(samples.label >= 0)
    y = samples.label
    torch.manual_seed(0)  # run.py's random-init encoder of seed 0
    features = {
        "raw features": raw_features(samples),
        "random init": embed_samples(PixelTimeSeriesEncoder(**doc["encoder"]).eval(), samples),
    }
    for run in sorted((args.folder / "runs").glob("*_seed0")):
        features[run.name.removesuffix("_seed0")] = embed_samples(
            load_checkpoint_encoder(run / "checkpoints" / "last.ckpt")[0], samples
        )
    out: dict[str, Any] = {"cs": cs, "splits": {}}
    for name, (tr, te) in splits(samples, "country", HELD_OUT, seed=0).items():
        rows = {}
        for enc, X in features.items():
            test = [logreg_f1(X, y, tr, te, c) for c in cs]
            best = int(np.argmax(test))
            rows[enc] = {"test_f1": test, "best_c": cs[best], "best_test_f1": test[best]}
            print(f"{name:22s} {enc:14s} " + " ".join(f"{v:.3f}" for v in test), flush=True)
        out["splits"][name] = {"n_train": len(tr), "n_test": len(te), "encoders": rows}
    (args.folder / "probe_strength.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.folder / "probe_strength.md").write_text(markdown(out))
    print(markdown(out))
    return out


def markdown(out: dict[str, Any]) -> str:
    """One table per split: test macro F1 at every C, each encoder's best C and its F1."""
    cs = out["cs"]
    lines = []
    for name, sp in out["splits"].items():
        lines += [
            f"### {name} ({sp['n_train']} train / {sp['n_test']} test pixels)",
            "",
            "| encoder | " + " | ".join(f"C={c:g}" for c in cs) + " | best C | its macro F1 |",
            "| --- | " + " | ".join("---:" for _ in cs) + " | ---: | ---: |",
        ]
        for enc, r in sp["encoders"].items():
            cells = " | ".join(f"{v:.3f}" for v in r["test_f1"])
            lines.append(f"| {enc} | {cells} | {r['best_c']:g} | {r['best_test_f1']:.3f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
