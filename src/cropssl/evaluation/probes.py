"""Probes on frozen features or embeddings: logistic regression, kNN and CatBoost, one interface.

:func:`fit_predict` fits a probe on ``(X_train, y_train)`` and returns predicted class indices and
class probabilities for ``X_test``. Labels are class indices ``0..K-1``; the probability matrix always
has ``K`` columns (``n_classes``, default ``max(y_train) + 1``), zero for classes absent from training.

* ``logreg`` -- scikit-learn logistic regression on standardised features (NaN imputed by the
  training median, all-NaN columns by 0);
* ``knn`` -- k nearest neighbours with cosine distance (optionally standardised);
* ``catboost`` -- CatBoost gradient boosting on CPU (NaN handled natively), seeded, 2 threads, writes
  no files. It is the "deployed baseline" when given the hand-crafted features of
  :mod:`cropssl.evaluation.features`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ProbeKind = Literal["logreg", "knn", "catboost"]
PROBES: tuple[str, ...] = ("logreg", "knn", "catboost")


def make_probe(kind: ProbeKind, *, seed: int = 0, **kw: Any) -> Any:
    """An unfitted scikit-learn compatible classifier.

    Args:
        kind: ``logreg``, ``knn`` or ``catboost``.
        seed: Random seed (logistic regression solver, CatBoost).
        **kw: Per kind:
            ``logreg``: ``C`` (1.0), ``max_iter`` (2000), ``class_weight`` (None), ``standardize`` (True);
            ``knn``: ``k`` (5), ``weights`` (``"distance"``), ``standardize`` (False);
            ``catboost``: ``iterations`` (100), ``depth`` (4), ``learning_rate`` (None = automatic),
            ``thread_count`` (2), ``auto_class_weights`` (None), any other ``CatBoostClassifier`` argument.

    """
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def prep(standardize: bool) -> list[Any]:
        steps: list[Any] = [SimpleImputer(strategy="median", keep_empty_features=True)]
        return [*steps, StandardScaler()] if standardize else steps

    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        standardize = kw.pop("standardize", True)
        params = {"C": 1.0, "max_iter": 2000, "random_state": seed, **kw}
        return make_pipeline(*prep(standardize), LogisticRegression(**params))
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        standardize = kw.pop("standardize", False)
        params = {"n_neighbors": kw.pop("k", 5), "weights": "distance", "metric": "cosine", **kw}
        return make_pipeline(*prep(standardize), KNeighborsClassifier(**params))
    if kind == "catboost":
        from catboost import CatBoostClassifier

        params = {
            "iterations": 100,
            "depth": 4,
            "loss_function": "MultiClass",
            "thread_count": 2,
            "random_seed": seed,
            "verbose": False,
            "allow_writing_files": False,
            **kw,
        }
        return CatBoostClassifier(**params)
    raise ValueError(f"unknown probe {kind!r}; probes are {PROBES}")


def fit_probe(
    kind: ProbeKind,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    *,
    n_classes: int | None = None,
    seed: int = 0,
    **kw: Any,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Fit a probe and predict; also return the fitted model (None when training has one class).

    Args:
        kind: ``logreg``, ``knn`` or ``catboost`` (see :func:`make_probe` for ``**kw``).
        X_train: ``[N, D]`` training features (NaN allowed).
        y_train: ``[N]`` class indices ``>= 0``.
        X_test: ``[M, D]`` features to predict.
        n_classes: Number of classes ``K`` (default ``max(y_train) + 1``).
        seed: Random seed.
        **kw: Probe hyper-parameters.

    Returns:
        ``(pred, proba, model)``: ``[M]`` int64 class indices, ``[M, K]`` float64 probabilities, and the
        fitted model (None when the training labels hold one class: every sample gets that class).

    """
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.int64)
    if X_train.ndim != 2 or X_test.ndim != 2 or X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"X_train {X_train.shape} and X_test {X_test.shape} must be [N, D] with the same D")
    if y_train.shape != (len(X_train),):
        raise ValueError(f"y_train has shape {y_train.shape}, expected ({len(X_train)},)")
    if len(y_train) == 0 or y_train.min() < 0:
        raise ValueError("y_train must be non-empty class indices >= 0 (drop excluded samples first)")
    k = int(y_train.max()) + 1 if n_classes is None else int(n_classes)
    if y_train.max() >= k:
        raise ValueError(f"class index {y_train.max()} out of range for n_classes={k}")
    proba = np.zeros((len(X_test), k), dtype=np.float64)
    present = np.unique(y_train)
    model = None
    if len(present) == 1:  # nothing to learn: every probe would predict the only class
        proba[:, present[0]] = 1.0
    else:
        if kind == "knn":
            kw["k"] = min(int(kw.get("k", 5)), len(X_train))
        model = make_probe(kind, seed=seed, **kw)
        model.fit(X_train, y_train)
        classes = np.asarray(model.classes_, dtype=np.int64).reshape(-1)
        proba[:, classes] = model.predict_proba(X_test)
    return proba.argmax(axis=1).astype(np.int64), proba, model


def fit_predict(
    kind: ProbeKind,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    *,
    n_classes: int | None = None,
    seed: int = 0,
    **kw: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_probe` without the model: ``(pred, proba)``."""
    pred, proba, _ = fit_probe(kind, X_train, y_train, X_test, n_classes=n_classes, seed=seed, **kw)
    return pred, proba


__all__ = ["PROBES", "ProbeKind", "fit_predict", "fit_probe", "make_probe"]
