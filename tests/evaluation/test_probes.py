from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from cropssl.evaluation.features import compute_features
from cropssl.evaluation.labels import UnknownCodeWarning, encode_labels
from cropssl.evaluation.metrics import classification_metrics
from cropssl.evaluation.probes import PROBES, fit_predict, make_probe
from cropssl.evaluation.splits import random_split
from cropssl.schema import PixelSamples


def _blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[5.0, 0, 0, 1], [0, 5.0, 0, 1], [0, 0, 5.0, 1]])
    return centers[y] + rng.normal(scale=0.5, size=(n, 4)), y


@pytest.mark.parametrize("kind", PROBES)
def test_probes_separate_blobs_and_proba_shape(kind: str) -> None:
    X, y = _blobs()
    X[::7, 2] = np.nan  # NaN tolerated by every probe
    kw = {"iterations": 30} if kind == "catboost" else {}
    pred, proba = fit_predict(kind, X[:80], y[:80], X[80:], n_classes=5, **kw)
    assert pred.dtype == np.int64 and proba.shape == (40, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, 3:] == 0).all()  # classes absent from training get no probability
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    assert (pred == y[80:]).mean() >= 0.95


def test_knn_matches_sklearn_cosine() -> None:
    X, y = _blobs(seed=1)
    pred, _ = fit_predict("knn", X[:90], y[:90], X[90:], k=7)
    ref = KNeighborsClassifier(7, metric="cosine", weights="distance").fit(X[:90], y[:90]).predict(X[90:])
    np.testing.assert_array_equal(pred, ref)


def test_single_class_and_errors() -> None:
    X, _ = _blobs(20)
    pred, proba = fit_predict("logreg", X[:10], np.full(10, 2), X[10:], n_classes=3)
    assert (pred == 2).all() and (proba[:, 2] == 1).all()
    with pytest.raises(ValueError, match="unknown probe"):
        make_probe("svm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        fit_predict("knn", X[:10], np.r_[np.zeros(9), -1], X[10:])
    with pytest.raises(ValueError, match="same D"):
        fit_predict("knn", X[:10], np.zeros(10), X[10:, :2])


def test_catboost_is_seeded() -> None:
    X, y = _blobs(seed=2)
    X = X + np.random.default_rng(0).normal(scale=3, size=X.shape)  # make it hard
    a = fit_predict("catboost", X[:80], y[:80], X[80:], seed=4, iterations=20)[1]
    b = fit_predict("catboost", X[:80], y[:80], X[80:], seed=4, iterations=20)[1]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["logreg", "catboost"])
def test_real_east_africa_beats_majority(east_africa: PixelSamples, kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCodeWarning)
        ls = encode_labels(east_africa, "CROPTYPE24", min_count=10)
    samples, y = east_africa.select(ls.keep), ls.y[ls.keep]
    X, _ = compute_features(samples)
    split = random_split(samples, test_size=0.3, val_size=0.0, labels=y, seed=0)
    tr, te = split.indices(samples, "train"), split.indices(samples, "test")
    majority = np.full(len(te), np.bincount(y[tr]).argmax())
    base = classification_metrics(y[te], majority, ls.classes)
    pred, _ = fit_predict(kind, X[tr], y[tr], X[te], n_classes=len(ls.classes))
    m = classification_metrics(y[te], pred, ls.classes)
    assert m["accuracy"] > base["accuracy"]
    assert m["macro_f1"] > base["macro_f1"] + 0.1
