"""Plots of an evaluation report: per-class F1, confusion matrices, the efficiency frontier, robustness."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROBUSTNESS_NAMES = {"no_s2": "no S2 (SAR only)", "no_s1": "no S1", "s2_radiometry": "S2 radiometry",
                    "no_meteo": "no meteo"}  # fmt: skip


PLOTS = {
    "per_class_f1": "per_class_f1.png",
    "confusion": "confusion_matrices.png",
    "frontier_macs": "frontier_macs.png",
    "frontier_px_per_s": "frontier_px_per_s.png",
    "robustness": "robustness.png",
}


def plot_robustness(rob: Mapping[str, Any], path: Path) -> None:
    """Grouped bars of the macro-F1 drop per model and transform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(rob["results"], key=lambda m: -rob["results"][m]["clean"])
    ts = rob["transforms"]
    fig, ax = plt.subplots(figsize=(max(7, 0.5 * len(models) * len(ts) / 3), 4))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(ts))
    for i, m in enumerate(models):
        ax.bar(x + i * width, [rob["results"][m][t]["drop"] for t in ts], width, label=m)
    ax.set_xticks(x + 0.4 - width / 2, [ROBUSTNESS_NAMES.get(t, t) for t in ts], rotation=20, ha="right")
    ax.set_ylabel("macro-F1 drop from the clean test fold")
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Robustness: drop under each degradation of the test pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- plots
def _selection(results: list[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The best strategy of every encoder plus the baselines (at most ``limit``), best first."""
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        key = r["encoder"] if r["kind"] == "encoder" else r["name"]
        if key not in best or r["macro_f1"] > best[key]["macro_f1"]:
            best[key] = r
    return sorted(best.values(), key=lambda r: -r["macro_f1"])[:limit]


def plot_per_class_f1(results: list[dict[str, Any]], classes: list[str], path: Path) -> None:
    """Grouped bars of per-class F1 (classes x methods) for the methods of :func:`_selection`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = _selection(results)
    n, m = len(classes), max(len(sel), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * n * m / 2 + 3), 4.5))
    width = 0.8 / m
    x = np.arange(n)
    cmap = plt.get_cmap("tab10" if m <= 10 else "tab20")
    for j, r in enumerate(sel):
        f1 = [r["metrics"]["per_class"][c]["f1"] for c in classes]
        ax.bar(
            x + (j - (m - 1) / 2) * width,
            f1,
            width,
            label=f"{r['name']} ({r['macro_f1']:.2f})",
            color=cmap(j % cmap.N),
        )
    support = [sel[0]["metrics"]["per_class"][c]["support"] for c in classes] if sel else [0] * n
    ax.set_xticks(x, [f"{c}\n(n={s})" for c, s in zip(classes, support)], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("F1 (test)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-class F1 (best strategy per encoder, baselines); legend: macro F1")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusions(results: list[dict[str, Any]], classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrices (all methods if at most 12, else the :func:`_selection`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = sorted(results, key=lambda r: -r["macro_f1"]) if len(results) <= 12 else _selection(results, 12)
    m = max(len(sel), 1)
    cols = min(m, 4)
    rows = (m + cols - 1) // cols
    k = len(classes)
    size = 1.6 + 0.38 * k
    fig, axes = plt.subplots(
        rows, cols, figsize=(size * cols, size * rows + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel()[m:]:
        ax.axis("off")
    for ax, r in zip(axes.ravel(), sel):
        cm = np.asarray(r["metrics"]["confusion_matrix"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.6 else "black",
                    )
        ax.set_title(f"{r['name']}\nmacro F1 {r['macro_f1']:.3f}", fontsize=8)
        ax.set_xticks(range(k), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(k), classes, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle("Confusion matrices (test; colour = row-normalised recall, numbers = counts)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(results: list[dict[str, Any]], key: str, path: Path) -> None:
    """Macro F1 (with CI) against cost: ``macs_per_pixel`` (log x) or ``px_per_s`` (log x).

    Methods without that cost (e.g. the feature baseline has no MACs) are drawn as horizontal lines.
    The Pareto frontier (better F1 for less MACs / more px/s) is connected.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {
        "logreg": "o",
        "knn": "s",
        "catboost": "^",
        "finetune": "D",
        "scratch": "X",
        "catboost_features": "*",
    }
    enc_names = sorted({str(r["encoder"]) for r in results if r["kind"] == "encoder"})
    cmap = plt.get_cmap("tab10" if len(enc_names) <= 10 else "tab20")
    colors = {e: cmap(i % cmap.N) for i, e in enumerate(enc_names)}
    pts = []
    for r in results:
        c = (r.get("cost") or {}).get(key)
        color = colors.get(str(r["encoder"]), "black") if r["kind"] == "encoder" else "black"
        if c is None:
            ax.axhline(r["macro_f1"], ls="--", color="grey", lw=1)
            ax.text(
                0.01,
                r["macro_f1"],
                f" {r['name']} (no {key})",
                transform=ax.get_yaxis_transform(),
                fontsize=7,
                va="bottom",
                color="grey",
            )
            continue
        err = [[r["macro_f1"] - r["ci"]["low"]], [r["ci"]["high"] - r["macro_f1"]]]
        ax.errorbar(
            c,
            r["macro_f1"],
            yerr=err,
            fmt=markers.get(r["strategy"], "o"),
            color=color,
            ms=7,
            capsize=2,
            lw=0.8,
            label=r["name"],
        )
        pts.append((c, r["macro_f1"]))
    if pts:
        better_low = key == "macs_per_pixel"
        order = sorted(pts, key=lambda p: (p[0] if better_low else -p[0], -p[1]))
        front, best = [], -1.0
        for c, f in order:
            if f > best:
                front.append((c, f))
                best = f
        ax.plot(*zip(*front), color="grey", lw=1, alpha=0.6, zorder=0)
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(
        {"macs_per_pixel": "MACs per pixel (encoder, T=12)", "px_per_s": "CPU pixels / s (inference)"}.get(
            key, key
        )
    )
    ax.set_ylabel("macro F1 (test, 95% CI)")
    ax.set_title(
        "Efficiency frontier: " + ("lower cost is left" if key == "macs_per_pixel" else "faster is right")
    )
    if pts:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
