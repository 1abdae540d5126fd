"""Classification metrics of crop type maps: F1 / precision / recall, confusion, per-group, bootstrap CI.

Labels are encoded class indices ``0..K-1`` (see :mod:`cropssl.evaluation.labels`). Everything derives
from the confusion matrix (rows = true class, columns = predicted class), computed with ``np.bincount``
so that the bootstrap can compute thousands of resampled matrices at once.

Conventions (those of scikit-learn with ``zero_division=0``): a class with no prediction has precision
0, a class with no sample has recall 0, and macro averages run over the classes present in ``y_true``
or ``y_pred`` (scikit-learn's default label set), so classes absent from both do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _check(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    if len(y_true) == 0:
        raise ValueError("no samples to evaluate")
    if min(y_true.min(), y_pred.min()) < 0:
        raise ValueError("labels must be class indices >= 0 (drop excluded samples, y = -1, first)")
    k = int(max(y_true.max(), y_pred.max())) + 1
    if n_classes is not None:
        if k > n_classes:
            raise ValueError(f"class index {k - 1} out of range for {n_classes} classes")
        k = n_classes
    return y_true, y_pred, k


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``[K, K]`` int64 confusion matrix, rows = true class, columns = predicted class."""
    y_true, y_pred, k = _check(y_true, y_pred, n_classes)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class and macro scores of one ``[K, K]`` or a stack ``[B, K, K]`` of confusion matrices."""
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    present = denom > 0
    n_present = np.maximum(present.sum(axis=-1), 1)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "macro_precision": (precision * present).sum(axis=-1) / n_present,
        "macro_recall": (recall * present).sum(axis=-1) / n_present,
        "macro_f1": (f1 * present).sum(axis=-1) / n_present,
        "accuracy": tp.sum(axis=-1) / np.maximum(cm.sum(axis=(-2, -1)), 1),
    }


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, macro and per-class F1 / precision / recall and the confusion matrix.

    Args:
        y_true: ``[N]`` true class indices.
        y_pred: ``[N]`` predicted class indices.
        class_names: Names of the ``K`` classes (default ``"0".."K-1"``, K = largest index + 1).

    Returns:
        JSON-serialisable dict: ``n``, ``accuracy``, ``macro_f1``, ``macro_precision``,
        ``macro_recall``, ``per_class`` (``{name: {f1, precision, recall, support}}``), ``classes``
        and ``confusion_matrix`` (list of rows, true class x predicted class).

    """
    cm = confusion_matrix(y_true, y_pred, None if class_names is None else len(class_names))
    names = [str(c) for c in (class_names if class_names is not None else range(len(cm)))]
    s = scores_from_confusion(cm)
    return {
        "n": int(cm.sum()),
        "accuracy": float(s["accuracy"]),
        "macro_f1": float(s["macro_f1"]),
        "macro_precision": float(s["macro_precision"]),
        "macro_recall": float(s["macro_recall"]),
        "per_class": {
            name: {
                "f1": float(s["f1"][i]),
                "precision": float(s["precision"][i]),
                "recall": float(s["recall"][i]),
                "support": int(s["support"][i]),
            }
            for i, name in enumerate(names)
        },
        "classes": names,
        "confusion_matrix": cm.tolist(),
    }


def per_group_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray | Sequence[Any],
    class_names: Sequence[str] | None = None,
    *,
    min_samples: int = 1,
) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` for each group (e.g. ``samples.meta["country"]`` of the test set).

    Args:
        y_true: ``[N]`` true class indices.
        y_pred: ``[N]`` predicted class indices.
        groups: ``[N]`` group of each sample (any meta key, year, spatial block, ...).
        class_names: Names of the ``K`` classes (shared by all groups).
        min_samples: Groups with fewer samples are left out.

    Returns:
        ``{group: metrics}``, groups sorted by name.

    """
    y_true, y_pred, k = _check(y_true, y_pred, None if class_names is None else len(class_names))
    groups = np.asarray([str(g) for g in groups], dtype=object)
    if groups.shape != y_true.shape:
        raise ValueError(f"groups has {len(groups)} entries for {len(y_true)} samples")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    out = {}
    for g in sorted(set(groups.tolist())):
        sel = groups == g
        if sel.sum() >= min_samples:
            out[g] = classification_metrics(y_true[sel], y_pred[sel], names)
    return out


def bootstrap_macro_f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    n_classes: int | None = None,
    chunk: int = 256,
) -> dict[str, float]:
    """Percentile bootstrap confidence interval of the macro F1 (samples resampled with replacement).

    Vectorised: each chunk of resamples is one ``np.bincount`` into a ``[chunk, K, K]`` stack of
    confusion matrices.

    Args:
        y_true: ``[N]`` true class indices.
        y_pred: ``[N]`` predicted class indices.
        n_boot: Number of bootstrap resamples.
        confidence: Coverage of the interval (0.95 -> 2.5th and 97.5th percentiles).
        seed: Random seed.
        n_classes: Number of classes (default: largest index + 1).
        chunk: Resamples per vectorised batch (bounds memory to ``chunk * N`` indices).

    Returns:
        ``{"macro_f1": point estimate, "low", "high", "std", "confidence", "n_boot"}``.

    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    y_true, y_pred, k = _check(y_true, y_pred, n_classes)
    boot = bootstrap_macro_f1_samples(y_true, [y_pred], k, n_boot=n_boot, seed=seed, chunk=chunk)[0]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    point = float(scores_from_confusion(confusion_matrix(y_true, y_pred, k))["macro_f1"])
    return {
        "macro_f1": point,
        "low": float(low),
        "high": float(high),
        "std": float(boot.std(ddof=1)) if n_boot > 1 else 0.0,
        "confidence": confidence,
        "n_boot": n_boot,
    }


def bootstrap_macro_f1_samples(
    y_true: np.ndarray,
    preds: Sequence[np.ndarray],
    n_classes: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    chunk: int = 256,
) -> np.ndarray:
    """Macro F1 of each prediction on the same ``n_boot`` bootstrap resamples of the samples.

    The one resampling generator behind the CIs (:func:`bootstrap_macro_f1`) and the paired tests
    (:func:`paired_bootstrap_delta`): resample ``b`` draws the same sample indices for every prediction.

    Returns:
        ``[len(preds), n_boot]`` macro F1.

    """
    y_true = np.asarray(y_true, np.int64)
    k, n = int(n_classes), len(y_true)
    codes = [y_true * k + np.asarray(p, np.int64) for p in preds]
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in preds]
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        off = (np.arange(b) * k * k)[:, None]
        for i, code in enumerate(codes):
            cms = np.bincount((code[idx] + off).reshape(-1), minlength=b * k * k).reshape(b, k, k)
            out[i].append(scores_from_confusion(cms)["macro_f1"])
    return np.stack([np.concatenate(o) for o in out])


def paired_bootstrap_delta(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_classes: int,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile CI of ``macro_f1(a) - macro_f1(b)`` with the same resampled test samples for both.

    Returns:
        ``{"delta", "low", "high", "p_le_0"}`` (``p_le_0``: share of resamples where a is not better).

    """
    y = np.asarray(y, np.int64)
    fa, fb = bootstrap_macro_f1_samples(y, [pred_a, pred_b], n_classes, n_boot=n_boot, seed=seed)
    d = fa - fb
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    point = float(
        scores_from_confusion(confusion_matrix(y, pred_a, n_classes))["macro_f1"]
        - scores_from_confusion(confusion_matrix(y, pred_b, n_classes))["macro_f1"]
    )
    return {"delta": point, "low": float(lo), "high": float(hi), "p_le_0": float((d <= 0).mean())}


__all__ = [
    "bootstrap_macro_f1",
    "bootstrap_macro_f1_samples",
    "classification_metrics",
    "confusion_matrix",
    "paired_bootstrap_delta",
    "per_group_metrics",
    "scores_from_confusion",
]
