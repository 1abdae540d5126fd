"""Self-checks of an evaluation: the weak spots a reader must see before any score.

:func:`report_checks` reads the content of ``results.json`` (results with their confusion matrices, the
split's class counts per fold and its group overlaps) and returns one entry per problem found, each a
``{"check", "severity", "message"}`` dict; they go at the top of ``report.md`` as a warning box and into
``results.json["checks"]``:

* ``constant_predictor``: a model predicts one class for more than 95 % of the test fold;
* ``classes_absent_from_test``: classes of the training fold with no test sample (their F1 is not measured);
* ``unseen_test_classes``: test samples of classes the training fold lacks (excluded from scoring);
* ``other_dominates``: ``other`` holds more than half of the test fold (the score is mostly about ``other``);
* ``confounded_shift``: a year split whose folds share no region (cell / country / dataset), or a region
  split whose folds share no year -- the drop mixes both shifts;
* ``small_test_fold``: the differences the CIs can resolve (about twice the median CI half-width) are larger
  than 0.05 macro F1, or the test fold has fewer than 100 samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

CONSTANT_SHARE = 0.95
OTHER_SHARE = 0.5
MIN_TEST = 100
RESOLVABLE = 0.05
REGION_KEYS = ("h3_l3_cell", "country", "ref_id")


def _check(check: str, message: str, severity: str = "warning") -> dict[str, str]:
    return {"check": check, "severity": severity, "message": message}


def constant_predictors(results: list[Mapping[str, Any]], classes: list[str]) -> list[dict[str, str]]:
    """Models whose test predictions are (nearly) one class."""
    out = []
    for r in results:
        cm = np.asarray(r["metrics"]["confusion_matrix"])
        pred = cm.sum(0)
        if pred.sum() and pred.max() / pred.sum() > CONSTANT_SHARE:
            c = classes[int(pred.argmax())] if int(pred.argmax()) < len(classes) else str(pred.argmax())
            out.append(
                _check(
                    "constant_predictor",
                    f"{r['name']} predicts `{c}` for {pred.max() / pred.sum():.0%} of the test samples: its "
                    f"macro F1 {r['macro_f1']:.3f} measures the class balance, not the encoder",
                )
            )
    return out


def fold_classes(counts: Mapping[str, Mapping[str, int]], n_test: int) -> list[dict[str, str]]:
    """Classes present in train but not in test, test samples of unseen classes, ``other``'s share."""
    out = []
    train, test = counts.get("train", {}), counts.get("test", {})
    absent = [c for c, n in train.items() if n > 0 and test.get(c, 0) == 0 and c != "(unseen class)"]
    if absent:
        out.append(
            _check(
                "classes_absent_from_test",
                f"the test fold holds no sample of {', '.join(f'`{c}`' for c in absent)} (present in train): "
                "their F1 is not measured (tables say *absent*) and the macro F1 averages over fewer classes",
            )
        )
    unseen = int(test.get("(unseen class)", 0))
    if unseen:
        out.append(
            _check(
                "unseen_test_classes",
                f"{unseen} test samples belong to classes never seen in training: they are excluded from "
                "scoring",
            )
        )
    other = int(test.get("other", 0))
    if n_test and other / n_test > OTHER_SHARE:
        out.append(
            _check(
                "other_dominates",
                f"`other` holds {other / n_test:.0%} of the test fold ({other} of {n_test}): the scores are "
                "mostly about telling `other` apart; choose a legend or min_count that keeps more classes",
            )
        )
    return out


def confounding(split: Mapping[str, Any]) -> list[dict[str, str]]:
    """A year split that is also a region split, or a region split that is also a year split."""
    info = split.get("info") or {}
    overlap = split.get("overlap") or {}
    kind = info.get("kind")
    if kind == "temporal":
        disjoint = [
            k for k in REGION_KEYS if k in overlap and overlap[k]["test"] and overlap[k]["shared"] == 0
        ]
        if disjoint:
            return [
                _check(
                    "confounded_shift",
                    f"the year split is also a region split: train and test share no {' / '.join(disjoint)}; "
                    "the drop mixes a new year with a new place",
                )
            ]
    elif kind in ("group", "geographic") or info.get("key") not in (None, "year"):
        years = overlap.get("year")
        if years and years["test"] and years["shared"] == 0:
            return [
                _check(
                    "confounded_shift",
                    "the region split is also a year split: train and test share no year; the drop mixes a "
                    "new place with a new year",
                )
            ]
    return []


def resolution(results: list[Mapping[str, Any]], n_test: int) -> list[dict[str, str]]:
    """How small a difference the test fold can resolve."""
    if not results:
        return []
    half = float(np.median([(r["ci"]["high"] - r["ci"]["low"]) / 2 for r in results]))
    mdd = 2 * half
    if n_test < MIN_TEST or mdd > RESOLVABLE:
        return [
            _check(
                "small_test_fold",
                f"{n_test} test samples: differences smaller than about {mdd:.2f} macro F1 (twice the median "
                "CI half-width) cannot be told apart; read the significance tables, not the ranking",
            )
        ]
    return []


def report_checks(doc: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every self-check of an evaluation document (see the module docstring)."""
    results = list(doc.get("results") or [])
    classes = list(doc["labels"]["classes"])
    split = doc.get("split") or {}
    n_test = int(doc.get("n_test", 0))
    return [
        *constant_predictors(results, classes),
        *fold_classes(split.get("class_counts") or {}, n_test),
        *confounding(split),
        *resolution(results, n_test),
    ]


def overlap_of(fold: np.ndarray, values: Mapping[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per grouping key: groups in train/val, in test, and shared (the input of :func:`confounding`)."""
    out = {}
    for key, v in values.items():
        v = np.asarray(v).astype(str)
        tr = set(v[fold != "test"].tolist()) - {"", "0"}
        te = set(v[fold == "test"].tolist()) - {"", "0"}
        out[key] = {"train": len(tr), "test": len(te), "shared": len(tr & te)}
    return out
