"""Map agreement: a predicted class map against a reference product layer on the same grid.

Sample macro F1 and map agreement can rank heads differently (a head that is right on the sampled fields
may paint the landscape wrongly). :func:`map_agreement` compares two maps pixel by pixel: overall
accuracy, Cohen's kappa, per-class IoU, the confusion matrix and the agreement of the area shares; pixels
whose reference code is outside the mapping (e.g. 254 / 255 no-data) and no-data pixels of the prediction
are excluded and counted. Predicted classes the reference legend lacks count as ``other`` when the mapping
has an ``other`` class, else as their own column (always a disagreement).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

UNMATCHED = "(not in the reference legend)"


def parse_reference_classes(spec: str | Mapping[Any, str]) -> dict[int, str]:
    """``"100=temporary_crops,0=other"`` (or a mapping) -> ``{code: class name}``."""
    if isinstance(spec, Mapping):
        return {int(k): str(v) for k, v in spec.items()}
    out = {}
    for item in str(spec).split(","):
        code, sep, name = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--reference-classes: expected CODE=NAME pairs, got {item!r}")
        out[int(code)] = name.strip()
    if not out:
        raise ValueError("--reference-classes maps no code")
    return out


def map_agreement(
    pred: np.ndarray,
    classes: Sequence[str],
    reference: np.ndarray,
    reference_classes: Mapping[int, str],
    nodata: int = -1,
) -> dict[str, Any]:
    """Agreement of a class-index map ``pred`` with a reference map of product codes (same shape).

    Args:
        pred: ``[H, W]`` predicted class indices into ``classes`` (``nodata`` = no data).
        classes: Names of the predicted classes.
        reference: ``[H, W]`` reference codes.
        reference_classes: Reference code -> class name (codes not listed are excluded, e.g. no-data).
        nodata: No-data value of ``pred``.

    Returns:
        ``labels``, ``n_compared``, ``n_excluded_reference`` (code -> pixels), ``n_nodata_prediction``,
        ``overall_accuracy``, ``kappa``, ``iou`` (label -> IoU), ``confusion_matrix`` (reference rows x
        predicted columns), ``area_share`` (label -> ``{"reference", "predicted", "difference"}``).

    """
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    pred, reference = np.asarray(pred), np.asarray(reference)
    if pred.shape != reference.shape:
        raise ValueError(f"the reference layer has shape {reference.shape}, the map {pred.shape}")
    labels = sorted(set(reference_classes.values()))
    known = np.isin(reference, list(reference_classes))
    excluded = {str(int(c)): int(n) for c, n in zip(*np.unique(reference[~known], return_counts=True))}
    has_pred = pred != nodata
    use = known & has_pred
    ref_names = np.array([reference_classes[int(c)] for c in reference[use]], dtype=object)
    pred_names = np.asarray(list(classes), dtype=object)[pred[use].astype(np.int64)]
    fallback = "other" if "other" in labels else UNMATCHED
    pred_names = np.where(np.isin(pred_names, labels), pred_names, fallback)
    cols = labels + ([UNMATCHED] if fallback == UNMATCHED and (pred_names == UNMATCHED).any() else [])
    cm = (
        confusion_matrix(ref_names, pred_names, labels=cols) if len(ref_names) else np.zeros((len(cols),) * 2)
    )
    cm = cm[: len(labels)]  # the reference never holds the unmatched column
    n = int(cm.sum())
    tp = np.array([cm[i, i] for i in range(len(labels))], dtype=np.float64)
    iou = {c: float(tp[i] / max(cm[i].sum() + cm[:, i].sum() - tp[i], 1)) for i, c in enumerate(labels)}
    shares = {
        c: {
            "reference": float(cm[i].sum() / n) if n else 0.0,
            "predicted": float(cm[:, i].sum() / n) if n else 0.0,
        }
        for i, c in enumerate(labels)
    }
    for v in shares.values():
        v["difference"] = v["predicted"] - v["reference"]
    return {
        "labels": labels,
        "columns": cols,
        "n_compared": n,
        "n_excluded_reference": excluded,
        "n_nodata_prediction": int((known & ~has_pred).sum()),
        "overall_accuracy": float(tp.sum() / n) if n else float("nan"),
        "kappa": float(cohen_kappa_score(ref_names, pred_names, labels=cols)) if n else float("nan"),
        "iou": iou,
        "confusion_matrix": cm.astype(int).tolist(),
        "area_share": shares,
    }


def write_difference_png(
    path: Path,
    pred: np.ndarray,
    classes: Sequence[str],
    reference: np.ndarray,
    reference_classes: Mapping[int, str],
    title: str,
) -> None:
    """A PNG of where the map agrees with the reference (green), disagrees (red) or is not compared (grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = set(reference_classes.values())
    fallback = "other" if "other" in labels else UNMATCHED
    names = np.asarray([*classes, ""], dtype=object)[np.where(pred >= 0, pred, len(classes))]
    names = np.where(np.isin(names, list(labels)) | (names == ""), names, fallback)
    ref = np.vectorize(lambda c: reference_classes.get(int(c), ""), otypes=[object])(reference)
    state = np.where((ref == "") | (names == ""), 0, np.where(ref == names, 1, 2))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(
        state, cmap=ListedColormap(["#bdbdbd", "#2ca02c", "#d62728"]), vmin=0, vmax=2, interpolation="nearest"
    )
    counts = [int((state == k).sum()) for k in range(3)]
    ax.legend(
        handles=[
            Patch(color="#2ca02c", label=f"agrees ({counts[1]} px)"),
            Patch(color="#d62728", label=f"differs ({counts[2]} px)"),
            Patch(color="#bdbdbd", label=f"not compared ({counts[0]} px)"),
        ],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def heads_map_agreement(
    out: Path,
    heads: Mapping[str, str],
    cubes: Sequence[Mapping[str, Any]],
    macro_f1: Mapping[str, float],
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Map every cube with every saved head and compare each map with the cube's reference layer.

    The ``agreement`` block of ``cropssl-evaluate``: sample macro-F1 and map agreement can rank heads
    differently, so both are reported side by side.

    Args:
        out: The evaluation directory (heads under it; maps written to ``out/maps/``).
        heads: Method name -> head path relative to ``out`` (the report's ``heads``).
        cubes: Items ``{"cube": PATH.nc, "reference": PATH:VARIABLE, "classes": "CODE=NAME,..."}``; the
            reference may be a layer of the cube itself (``reference: CUBE.nc:VARIABLE``).
        macro_f1: Method name -> test macro F1 (for the table).
        progress: Show a progress bar per map.

    Returns:
        One row per (cube, head): ``method``, ``cube``, ``reference``, ``macro_f1``, ``overall_accuracy``,
        ``kappa``, ``mean_iou``, ``n_compared``, ``n_excluded``, ``n_nodata``, ``map`` (path relative to
        ``out``), ``area_share``.

    Raises:
        ValueError: an item lacks ``cube``, ``reference`` or ``classes``.

    """
    from cropssl.predict import predict_cube

    rows: list[dict[str, Any]] = []
    for item in cubes:
        missing = [k for k in ("cube", "reference", "classes") if not item.get(k)]
        if missing:
            raise ValueError(
                f"agreement.cubes item {dict(item)} lacks {missing}: give cube, reference (PATH:VARIABLE) "
                "and classes (CODE=NAME,...)"
            )
        cube = Path(str(item["cube"]))
        for method, rel in heads.items():
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cube.stem}__{method}")
            target = out / "maps" / f"{stem}.nc"
            s = predict_cube(
                out / rel,
                cube,
                target,
                progress=progress,
                reference=str(item["reference"]),
                reference_classes=str(item["classes"]),
            )
            a = s["agreement"]
            rows.append(
                {
                    "method": method,
                    "cube": str(cube),
                    "reference": str(item["reference"]),
                    "macro_f1": macro_f1.get(method),
                    "overall_accuracy": a["overall_accuracy"],
                    "kappa": a["kappa"],
                    "mean_iou": float(np.nanmean(list(a["iou"].values()))) if a["iou"] else None,
                    "n_compared": a["n_compared"],
                    "n_excluded": int(sum(a["n_excluded_reference"].values())),
                    "n_nodata": a["n_nodata_prediction"],
                    "area_share": a["area_share"],
                    "map": str(target.relative_to(out)),
                }
            )
    return rows
