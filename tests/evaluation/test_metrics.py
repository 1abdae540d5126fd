from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from cropssl.evaluation.metrics import (
    bootstrap_macro_f1,
    classification_metrics,
    confusion_matrix,
    per_group_metrics,
)


def _noisy(n: int, k: int, acc: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(k, n, p=np.linspace(1, 2, k) / np.linspace(1, 2, k).sum())
    pred = np.where(rng.random(n) < acc, y, rng.integers(0, k, n))
    return y, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed: int) -> None:
    y, pred = _noisy(300, 6, 0.6, seed)
    y[y == 3] = 4  # class 3 absent from y_true ...
    pred[pred == 3] = 2  # ... and from y_pred: not averaged (scikit-learn's default label set)
    pred[:5] = 5
    y[y == 5] = 0  # class 5 only predicted: precision 0, counted in the macro average
    names = [f"c{i}" for i in range(6)]
    m = classification_metrics(y, pred, names)
    kw = {"average": "macro", "zero_division": 0}
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, **kw))
    assert m["macro_precision"] == pytest.approx(skm.precision_score(y, pred, **kw))
    assert m["macro_recall"] == pytest.approx(skm.recall_score(y, pred, **kw))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred, labels=range(6)))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(6), zero_division=0)
    for i, name in enumerate(names):
        pc = m["per_class"][name]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(
            (p[i], r[i], f[i], s[i])
        )
    assert m["n"] == 300 and m["classes"] == names
    json.dumps(m)


def test_confusion_matrix_hand() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]))
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert confusion_matrix(np.array([0]), np.array([0]), n_classes=3).shape == (3, 3)
    with pytest.raises(ValueError, match=">= 0"):
        confusion_matrix(np.array([-1, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix(np.array([4]), np.array([0]), n_classes=3)


def test_per_group_metrics() -> None:
    y, pred = _noisy(200, 4, 0.7, 5)
    groups = np.where(np.arange(200) % 3 == 0, "UGA", "SSD")
    groups[:2] = "AF"
    out = per_group_metrics(y, pred, groups, ["a", "b", "c", "d"], min_samples=3)
    assert list(out) == ["SSD", "UGA"]  # AF has 2 samples < 3
    for g, m in out.items():
        sel = groups == g
        assert m["n"] == sel.sum()
        assert m["macro_f1"] == pytest.approx(
            skm.f1_score(y[sel], pred[sel], average="macro", zero_division=0)
        )
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y[sel], pred[sel]))


def test_bootstrap_ci_contains_estimate_and_narrows() -> None:
    widths = []
    for n in (100, 2000):
        y, pred = _noisy(n, 4, 0.7, 7)
        ci = bootstrap_macro_f1(y, pred, n_boot=500, seed=0)
        assert ci["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
        assert ci["low"] < ci["macro_f1"] < ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 20x more samples, ~4.5x narrower
    again = bootstrap_macro_f1(y, pred, n_boot=500, seed=0, chunk=64)  # seeded, chunking-independent
    assert again["low"] == ci["low"] and again["high"] == ci["high"]


def test_bootstrap_matches_loop_reference() -> None:
    y, pred = _noisy(80, 3, 0.6, 9)
    ci = bootstrap_macro_f1(y, pred, n_boot=200, seed=3, confidence=0.9)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 80, size=(200, 80))
    ref = [skm.f1_score(y[i], pred[i], average="macro", zero_division=0) for i in idx]
    assert ci["low"] == pytest.approx(np.quantile(ref, 0.05))
    assert ci["high"] == pytest.approx(np.quantile(ref, 0.95))
