"""Head files hold arrays and JSON only, and reproduce the fitted scikit-learn / CatBoost models exactly."""

from __future__ import annotations

import joblib
import numpy as np
import pytest

from cropssl.evaluation.heads import ArrayClassifier, load_head, save_head
from cropssl.evaluation.probes import make_probe


def _data(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, 300) * 2 + 1  # class codes 1, 3, 5, ...: not 0..K-1
    X = rng.normal(size=(300, 6)) + y[:, None] * 0.3
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values: the imputer's job
    X[:, 5] = np.nan if seed == 0 else X[:, 5]  # an all-missing feature (keep_empty_features)
    Xt = rng.normal(size=(80, 6)) + rng.integers(0, n_classes, 80)[:, None] * 0.6
    Xt[rng.random(Xt.shape) < 0.05] = np.nan
    return X, y, Xt


@pytest.mark.parametrize(
    ("kind", "n_classes", "kw"),
    [
        ("logreg", 2, {}),
        ("logreg", 4, {}),
        ("logreg", 3, {"standardize": False}),
        ("knn", 3, {}),
        ("knn", 3, {"weights": "uniform", "k": 7}),
        ("knn", 2, {"standardize": True}),
    ],
)
def test_array_classifier_matches_sklearn(kind, n_classes, kw):
    X, y, Xt = _data(n_classes)
    clf = make_probe(kind, **kw).fit(X, y)
    arr = ArrayClassifier.from_sklearn(clf)
    np.testing.assert_array_equal(arr.classes_, clf.classes_)
    np.testing.assert_allclose(arr.predict_proba(Xt), clf.predict_proba(Xt), atol=1e-10)
    np.testing.assert_array_equal(arr.predict(Xt), clf.predict(Xt))


def test_knn_exact_match_takes_the_neighbour_class():
    """sklearn's distance weighting: a query equal to a training point gets that point's class."""
    X, y, _ = _data(3, seed=1)
    clf = make_probe("knn").fit(X, y)
    arr = ArrayClassifier.from_sklearn(clf)
    np.testing.assert_allclose(arr.predict_proba(X[:20]), clf.predict_proba(X[:20]), atol=1e-10)


def _head(classifier, **extra):
    return {
        "strategy": "logreg",
        "classes": ["maize", "wheat", "rapeseed"],
        "legend": {"legend_name": "test"},
        "timesteps": 12,
        "bands": ["B2", "B3"],
        "encoder": {"spec": "presto", "config": {"d": 128, "nested": [1, 2]}},
        "classifier": classifier,
        "metrics": {"macro_f1": np.float64(0.5), "nan": float("nan")},
        **extra,
    }


def test_round_trip_and_no_pickle(tmp_path):
    X, y, Xt = _data(3)
    clf = make_probe("logreg").fit(X, y)
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, np.float32)}
    linear = {"weight": np.ones((3, 4), np.float32).T, "bias": np.zeros(3), "norm_mean": None, "eps": 1e-5}
    p = save_head(tmp_path / "h.safetensors", _head(clf, encoder_state=state, linear=linear))
    assert b"sklearn" not in p.read_bytes()  # no class references: nothing to import or run on load
    head = load_head(p)
    assert head["classes"] == ["maize", "wheat", "rapeseed"] and head["encoder"]["config"]["d"] == 128
    assert head["metrics"] == {"macro_f1": 0.5, "nan": None}
    np.testing.assert_allclose(head["classifier"].predict_proba(Xt), clf.predict_proba(Xt), atol=1e-10)
    np.testing.assert_array_equal(head["encoder_state"]["w"], state["w"])
    assert head["linear"]["norm_mean"] is None and head["linear"]["eps"].shape == ()
    np.testing.assert_array_equal(head["linear"]["weight"], linear["weight"])  # a transposed view
    assert not list(tmp_path.glob("*.tmp*"))


def test_catboost_round_trip(tmp_path):
    X, y, Xt = _data(3)
    clf = make_probe("catboost", iterations=20).fit(X, y)
    head = load_head(save_head(tmp_path / "cb.safetensors", _head(clf, strategy="catboost")))
    np.testing.assert_array_equal(np.asarray(head["classifier"].classes_), clf.classes_)
    np.testing.assert_allclose(head["classifier"].predict_proba(Xt), clf.predict_proba(Xt), atol=1e-12)


def test_constant_head(tmp_path):
    head = load_head(save_head(tmp_path / "c.safetensors", _head(None, constant_class=2)))
    assert head["classifier"] is None and head["constant_class"] == 2


def test_pickled_heads_need_trust(tmp_path):
    """An old joblib head is refused with the reason and the flag; read with trust_pickle=True."""
    X, y, _ = _data(2)
    old = tmp_path / "old.joblib"
    joblib.dump({"format": "cropssl-head", "version": 1, **_head(make_probe("logreg").fit(X, y))}, old)
    with pytest.raises(ValueError, match="can run any code.*--trust-pickle"):
        load_head(old)
    assert load_head(old, trust_pickle=True)["strategy"] == "logreg"
