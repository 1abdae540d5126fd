"""The evaluation protocol: encoders x strategies + baselines on one split, with a self-contained report.

:func:`evaluate` runs every encoder (export dirs, checkpoints, ``presto``, ``random``) with every
strategy (``logreg``, ``knn``, ``catboost`` probes on frozen embeddings, ``finetune``) and the baselines
(``catboost_features``: CatBoost on the hand-crafted features, the deployed baseline; ``scratch``: the
fine-tuning recipe on a randomly initialised encoder), all on exactly the same labelled samples and the
same train / val / test split, and writes to ``out``:

* ``report.md`` -- readable on its own: what was evaluated, on what data and split, results table with
  bootstrap 95% CIs of macro F1, which differences are *not* significant, per-class and per-group
  metrics, cost (MACs / pixel, CPU pixels / s), label and split reports, plots;
* ``results.json`` -- everything in the report, machine readable;
* ``per_class_f1.png``, ``confusion_matrices.png``, ``frontier_macs.png``, ``frontier_px_per_s.png``;
* ``split.json`` (the split, reloadable with :func:`~cropssl.evaluation.splits.load_split`) and
  ``predictions.parquet`` (test predictions of every method);
* with ``save_heads=True``: ``heads/<encoder>__<strategy>.joblib`` per (encoder, strategy), the input of
  ``cropssl-predict`` (format: :func:`save_head`).

Protocol: labels are encoded with the legend on the whole set only to stratify the split; the final
classes (``min_count`` folding into ``other``) are decided on the train + val folds. Probes and CatBoost fit
on the train fold; fine-tuning and the scratch baseline also use the val fold for early stopping (or carve
one out of train when the split has none). Every method is scored on the test fold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.evaluation.encoders import (
    EncoderSpec,
    LoadedEncoder,
    check_compatible,
    embed_samples,
    encoder_cost,
    resolve_encoder,
)
from cropssl.evaluation.finetune import FinetuneConfig
from cropssl.evaluation.labels import LabelEncoder, UnknownCodeWarning, load_legend
from cropssl.evaluation.splits import MissingClassWarning, Split, random_split
from cropssl.schema import BANDS, PixelSamples

log = logging.getLogger("cropssl.evaluate")

STRATEGIES: tuple[str, ...] = ("logreg", "knn", "catboost", "finetune")
BASELINES: tuple[str, ...] = ("catboost_features", "scratch")
HEAD_FORMAT = "cropssl-head"
HEAD_VERSION = 1
PLOTS = {
    "per_class_f1": "per_class_f1.png",
    "confusion": "confusion_matrices.png",
    "frontier_macs": "frontier_macs.png",
    "frontier_px_per_s": "frontier_px_per_s.png",
    "robustness": "robustness.png",
}


class EvaluationWarning(UserWarning):
    """Something in the evaluation deserves attention (listed in the report)."""


# ---------------------------------------------------------------------------------------------- data
def load_data(paths: Sequence[str | Path], timesteps: int = 12) -> tuple[PixelSamples, list[dict[str, Any]]]:
    """Read labelled shard directories and / or WorldCereal files (parquet, NetCDF) into one sample set.

    Sample ids are made unique across sources (prefixed with the source name when they collide).

    Args:
        paths: Shard directories (with ``manifest.json``) and files readable by
            :func:`cropssl.data.ingest.read_input`.
        timesteps: Months per window for files (shards keep their own T, which must equal it).

    Returns:
        The concatenated samples and one description per source (path, format, samples, labelled).

    Raises:
        FileNotFoundError: a missing path.
        ValueError: no path, or sources with a different T.

    """
    if not paths:
        raise ValueError("no data given: pass datasets=[shard dirs and/or WorldCereal parquet files]")
    parts: list[PixelSamples] = []
    sources: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"data {p} does not exist")
        if p.is_dir():
            from cropssl.data.shards import read_shards

            s, fmt = read_shards(p), "shards"
        else:
            from cropssl.data.ingest import read_input

            s, rep = read_input(p, timesteps)
            fmt = rep.format
        if s.timesteps != timesteps:
            raise ValueError(f"data {p} has T={s.timesteps} timesteps, expected timesteps={timesteps}")
        src = np.asarray(s.meta["source"], dtype=object)
        s.meta["source"] = np.where(src == "", p.name, src)
        parts.append(s)
        sources.append(
            {"path": str(p), "format": fmt, "samples": len(s), "labelled": int((s.label >= 0).sum())}
        )
    samples = PixelSamples.concat(parts) if len(parts) > 1 else parts[0]
    ids = np.asarray(samples.meta["sample_id"], dtype=object).astype(str)
    if len(set(ids.tolist())) < len(ids):
        owner = np.concatenate([np.full(len(pt), i) for i, pt in enumerate(parts)])
        ids = np.array([f"{Path(str(paths[o])).name}:{i}" for o, i in zip(owner, ids)], dtype=object)
        if len(set(ids.tolist())) < len(ids):
            raise ValueError("duplicate sample ids within a data source; cannot build a split")
    samples.meta["sample_id"] = np.asarray(ids, dtype=object)
    return samples, sources


@dataclasses.dataclass
class PreparedData:
    """Labelled samples, their classes and the split.

    Attributes:
        samples: The samples kept (labelled with a class), in split order.
        y: ``[N]`` class index of each sample (-1 for test samples of classes never seen in training,
            excluded from scoring).
        classes: Class names.
        split: The split (same order as ``samples``).
        label_report: The label encoder's report (folded, unknown codes, ignored, unseen, class counts).
        label_encoder: The fitted encoder (saved with heads).
        warnings: Messages of data / label / split warnings.

    """

    samples: PixelSamples
    y: np.ndarray
    classes: list[str]
    split: Split
    label_report: dict[str, Any]
    label_encoder: LabelEncoder
    warnings: list[str]

    def fold(self, name: str) -> np.ndarray:
        """Boolean mask of a fold's scored samples (class known)."""
        return (self.split.fold == name) & (self.y >= 0)


def prepare_data(
    samples: PixelSamples,
    *,
    legend: str | Mapping[Any, str] = "CROPTYPE24",
    min_count: int = 10,
    unknown: str = "drop",
    split: Callable[..., Split] | None = None,
    class_mappings: str | Path | None = None,
) -> PreparedData:
    """Encode labels, split, and fit the final classes on the training fold.

    Args:
        samples: All samples (unlabelled ones are dropped).
        legend: Legend name of ``class_mappings.json`` or a ``{code: name}`` mapping.
        min_count: Classes with fewer training samples fold into ``other``.
        unknown: Policy for codes the legend does not know (``drop``, ``other``, ``error``).
        split: Split builder called as ``split(samples, labels=...)`` (default stratified random).
        class_mappings: ``class_mappings.json`` holding the legend names (default: see
            :func:`~cropssl.evaluation.labels.class_mappings_path`).

    Raises:
        ValueError: unknown legend (lists the valid ones), no labelled sample, or an empty test fold.

    """
    load_legend(
        legend, class_mappings
    )  # unknown legend -> ValueError listing the valid names, before any work
    notes: list[str] = []
    prelim = LabelEncoder(legend, min_count=1, unknown=unknown, path=class_mappings).fit_transform(samples)  # type: ignore[arg-type]
    if not prelim.keep.any():
        raise ValueError(
            f"no sample has a class of legend {prelim.report['legend']} "
            f"({prelim.report['n_total']} samples, {prelim.report['n_unlabelled']} unlabelled, "
            f"unknown codes {prelim.report['unknown_codes']})"
        )
    kept = samples.select(prelim.keep)
    names = prelim.names[prelim.keep]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sp = (split or random_split)(kept, labels=prelim.y[prelim.keep])
    for w in caught:  # the builder's missing-class warning names indices; ours names classes below
        if not issubclass(w.category, MissingClassWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not np.array_equal(np.asarray(sp.sample_id, dtype=object), np.asarray(kept.meta["sample_id"], object)):
        order = {s: i for i, s in enumerate(kept.meta["sample_id"].tolist())}
        idx = np.array([order[s] for s in sp.sample_id.tolist()])
        kept, names = kept.select(idx), names[idx]
    fold = sp.fold
    if not (fold == "test").any():
        raise ValueError(f"the split leaves the test fold empty ({sp.info})")
    fit_on = fold != "test"
    enc = LabelEncoder(legend, min_count=min_count, unknown=unknown, path=class_mappings).fit(
        kept.select(fit_on)
    )  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCodeWarning)  # already warned by the preliminary encoding
        labelled = enc.transform(kept)
    report = dict(labelled.report)
    report.update(
        n_total=int(prelim.report["n_total"]),
        n_unlabelled=int(prelim.report["n_unlabelled"]),
        unknown_codes=prelim.report["unknown_codes"],
        ignored=prelim.report["ignored"],
        n_excluded_before_split=int((~prelim.keep).sum()),
    )
    train_names = set(names[fold == "train"].tolist())
    for f in ("val", "test"):
        absent = sorted(set(names[fold == f].tolist()) - train_names)
        if absent:
            counts = {c: int((names[fold == f] == c).sum()) for c in absent}
            where = "folded into 'other'" if enc.other in (enc.classes_ or []) else "excluded from scoring"
            msg = f"classes absent from the train fold but present in {f}: {counts} ({where})"
            notes.append(msg)
            warnings.warn(msg, MissingClassWarning, stacklevel=2)
    y = labelled.y
    if not ((fold == "test") & (y >= 0)).any():
        raise ValueError(
            "no test sample has a class seen in training (test classes "
            f"{sorted(set(names[fold == 'test']))}, train classes {sorted(train_names)}); "
            "choose another split or legend"
        )
    test_classes = sorted({int(c) for c in y[(fold == "test") & (y >= 0)]})
    if len(enc.classes_ or []) < 2 or len(test_classes) < 2:
        which = "train" if len(enc.classes_ or []) < 2 else "test"
        classes = list(enc.classes_ or [])
        present = classes if which == "train" else [classes[i] for i in test_classes]
        raise ValueError(
            f"the split leaves {len(present)} class(es) in the {which} fold ({present}): any classifier "
            "scores a macro F1 of 1.0 on one class, which says nothing. Choose a split whose train and test "
            "folds each hold at least 2 classes (another split.test_groups / seed), or another legend"
        )
    if report["unknown_codes"]:
        notes.append(
            f"{sum(report['unknown_codes'].values())} samples have ewoc codes unknown to legend "
            f"{report['legend']} ({unknown}): {report['unknown_codes']}"
        )
    return PreparedData(kept, y, list(enc.classes_ or []), sp, report, enc, notes)


def split_report(data: PreparedData, samples: PixelSamples | None = None) -> dict[str, Any]:
    """Class counts per fold, group counts, and the leakage check of a split."""
    from cropssl.evaluation.splits import SplitLeakageError, check_leakage, group_values

    sp = data.split
    s = samples if samples is not None else data.samples
    counts = {
        f: {c: int(((sp.fold == f) & (data.y == i)).sum()) for i, c in enumerate(data.classes)}
        for f in ("train", "val", "test")
    }
    for f in counts:
        counts[f]["(unseen class)"] = int(((sp.fold == f) & (data.y < 0)).sum())
    out: dict[str, Any] = {"info": sp.info, "fold_sizes": sp.counts(), "class_counts": counts}
    from cropssl.evaluation.checks import REGION_KEYS, overlap_of

    out["overlap"] = overlap_of(
        sp.fold, {**{k: s.meta[k] for k in REGION_KEYS if k in s.meta}, "year": s.year.astype(str)}
    )
    info = sp.info or {}
    key = info.get("key") or ("year" if info.get("kind") == "temporal" else None)
    if key is not None:
        try:
            groups = check_leakage(sp, group_values(s, key, info.get("block_size_km")))
            out["leakage"] = {
                "key": key,
                "passed": True,
                "groups_per_fold": groups,
                "message": f"no {key} group occurs in both train/val and test",
            }
        except SplitLeakageError as exc:
            out["leakage"] = {"key": key, "passed": False, "message": str(exc)}
    else:
        shared = {}
        for k in ("country", "h3_l3_cell"):
            g = np.asarray(s.meta[k], dtype=object).astype(str)
            tr = set(g[sp.fold != "test"].tolist()) - {""}
            te = set(g[sp.fold == "test"].tolist()) - {""}
            shared[k] = {"shared": len(tr & te), "test_groups": len(te)}
        out["leakage"] = {
            "key": None,
            "passed": None,
            "shared_groups": shared,
            "message": (
                "random split: no group separation -- train and test share "
                + ", ".join(f"{v['shared']}/{v['test_groups']} {k} groups" for k, v in shared.items())
                + " (nearby samples on both sides make scores optimistic)"
            ),
        }
    return out


# ---------------------------------------------------------------------------------------------- probes
def fit_probe(
    kind: str,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    *,
    n_classes: int,
    seed: int = 0,
    **kw: Any,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """:func:`cropssl.evaluation.probes.fit_predict` that also returns the fitted model (None if trivial)."""
    from cropssl.evaluation.probes import make_probe

    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.int64)
    proba = np.zeros((len(X_test), n_classes), dtype=np.float64)
    present = np.unique(y_train)
    model = None
    if len(present) == 1:
        proba[:, present[0]] = 1.0
    else:
        if kind == "knn":
            kw["k"] = min(int(kw.get("k", 5)), len(X_train))
        model = make_probe(kind, seed=seed, **kw)  # type: ignore[arg-type]
        model.fit(X_train, y_train)
        classes = np.asarray(model.classes_, dtype=np.int64).reshape(-1)
        proba[:, classes] = model.predict_proba(X_test)
    return proba.argmax(axis=1).astype(np.int64), proba, model


# ---------------------------------------------------------------------------------------------- heads
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "encoder"


def save_head(path: str | Path, head: Mapping[str, Any]) -> Path:
    """Write a fitted head (joblib) for ``cropssl-predict``.

    A head is a dict with ``format="cropssl-head"``, ``version``, ``strategy`` (``logreg``, ``knn``,
    ``catboost``, ``finetune`` or ``catboost_features``), ``classes``, ``legend`` (the label encoder's
    :meth:`~cropssl.evaluation.labels.LabelEncoder.to_dict`), ``timesteps``, ``bands`` and

    * ``classifier``: the fitted scikit-learn pipeline / CatBoost model (probes, ``catboost_features``)
      or None (a single training class: ``constant_class``);
    * ``encoder``: description of the encoder it was fitted on (spec, kind, fingerprint, config), None
      for ``catboost_features``;
    * ``encoder_state``: the encoder weights (numpy) when they cannot be found from the spec (fine-tuned
      or random encoders);
    * ``linear``: for ``finetune``, ``weight``/``bias`` of the linear layer and ``norm_mean``/``norm_var``
      of its input standardisation (None without it);
    * ``metrics``: the test metrics of the evaluation run.

    Heads are pickles: load only heads you produced (as with any joblib / pickle file).
    """
    import joblib

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"format": HEAD_FORMAT, "version": HEAD_VERSION, **head}, p)
    return p


def load_head(path: str | Path) -> dict[str, Any]:
    """Read a head written by :func:`save_head`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a cropssl head.

    """
    import joblib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"head {p} does not exist (heads are written by cropssl-evaluate save_heads=true)"
        )
    try:
        head = joblib.load(p)
    except Exception as exc:
        raise ValueError(f"{p} is not a readable cropssl head ({type(exc).__name__}: {exc})") from exc
    if not isinstance(head, dict) or head.get("format") != HEAD_FORMAT:
        raise ValueError(f"{p} is not a cropssl head (no format={HEAD_FORMAT!r})")
    if int(head.get("version", 0)) > HEAD_VERSION:
        raise ValueError(
            f"{p} has head format version {head['version']}; this cropssl reads <= {HEAD_VERSION}"
        )
    return head


def _state_numpy(module: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------- statistics
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
    from cropssl.evaluation.metrics import _scores, confusion_matrix

    y = np.asarray(y, np.int64)
    k = n_classes
    rng = np.random.default_rng(seed)
    n = len(y)
    ca, cb = y * k + np.asarray(pred_a, np.int64), y * k + np.asarray(pred_b, np.int64)
    deltas = []
    for start in range(0, n_boot, 256):
        b = min(256, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        off = (np.arange(b) * k * k)[:, None]
        fa = _scores(np.bincount((ca[idx] + off).ravel(), minlength=b * k * k).reshape(b, k, k))["macro_f1"]
        fb = _scores(np.bincount((cb[idx] + off).ravel(), minlength=b * k * k).reshape(b, k, k))["macro_f1"]
        deltas.append(fa - fb)
    d = np.concatenate(deltas)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    point = float(
        _scores(confusion_matrix(y, pred_a, k))["macro_f1"]
        - _scores(confusion_matrix(y, pred_b, k))["macro_f1"]
    )
    return {"delta": point, "low": float(lo), "high": float(hi), "p_le_0": float((d <= 0).mean())}


def significance(
    results: list[dict[str, Any]],
    y: np.ndarray,
    preds: Mapping[str, np.ndarray],
    k: int,
    *,
    n_boot: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Compare every method with the best one and the deployed baseline (CI overlap + paired bootstrap)."""
    if not results:
        return {}
    ranked = sorted(results, key=lambda r: -r["macro_f1"])
    best = ranked[0]
    out: dict[str, Any] = {"best": best["name"], "vs_best": {}, "vs_baseline": {}, "baseline": None}
    base = next((r for r in results if r["strategy"] == "catboost_features"), None)
    if base is not None:
        out["baseline"] = base["name"]
    for r in ranked:
        for ref, key in ((best, "vs_best"), (base, "vs_baseline")):
            if ref is None or r["name"] == ref["name"]:
                continue
            overlap = r["ci"]["high"] >= ref["ci"]["low"] and ref["ci"]["high"] >= r["ci"]["low"]
            paired = paired_bootstrap_delta(
                y, preds[r["name"]], preds[ref["name"]], k, n_boot=n_boot, confidence=confidence, seed=seed
            )
            out[key][r["name"]] = {
                "ci_overlap": bool(overlap),
                "paired_delta": paired,
                "paired_significant": bool(paired["low"] > 0 or paired["high"] < 0),
            }
    return out


# ---------------------------------------------------------------------------------------------- main
def _threads(n: int | None) -> Any:
    from contextlib import nullcontext

    if not n:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(int(n))


ROBUSTNESS_NAMES = {"no_s2": "no S2 (SAR only)", "no_s1": "no S1", "s2_radiometry": "S2 radiometry",
                    "no_meteo": "no meteo"}  # fmt: skip


RARE_SHARE = 0.02


def rare_and_groups_markdown(doc: Mapping[str, Any], top: int = 6) -> list[str]:
    """Up front: per-class F1 of the rare classes (under 2 % of train) and per-group macro F1, best models."""
    res = doc["results"][:top]
    if not res:
        return []
    train = (doc.get("split") or {}).get("class_counts", {}).get("train", {})
    total = sum(v for k, v in train.items() if k != "(unseen class)") or 1
    rare = [c for c in doc["labels"]["classes"] if 0 < train.get(c, 0) / total < RARE_SHARE]
    L: list[str] = []
    if rare:
        L += [
            f"**Rare classes** (under {RARE_SHARE:.0%} of the training fold), F1 of the best models:",
            "",
        ]
        rows = []
        for r in res:
            cells = []
            for c in rare:
                pc = r["metrics"]["per_class"].get(c, {})
                cells.append(f"{pc.get('f1', 0):.2f}" if pc.get("support") else "absent")
            rows.append([r["name"], *cells])
        L += _table(["model", *[f"{c} ({train.get(c, 0)} train)" for c in rare]], rows)
        L.append("")
    for key in doc["protocol"].get("group_keys", []):
        groups = sorted({g for r in res for g in r["per_group"].get(key, {})})
        if len(groups) < 2:
            continue
        L += [f"**Per {key}** (macro F1 of the best models on each test group):", ""]
        rows = [
            [r["name"], *[_fmt((r["per_group"][key].get(g) or {}).get("macro_f1")) for g in groups]]
            for r in res
        ]
        L += _table(["model", *groups], rows)
        L.append("")
    return L


def robustness_markdown(rob: Mapping[str, Any] | None) -> list[str]:
    """The robustness table: macro F1 on the clean test fold and its drop under every transform."""
    if not rob:
        return []
    names = [ROBUSTNESS_NAMES.get(t, t.replace("clouds_", "S2 clouds ") + " %") for t in rob["transforms"]]
    cfg = rob["config"]
    rates = ", ".join(f"{100 * r:.0f} %" for r in cfg.get("cloud_rates", []))
    L = ["### Robustness to what the field throws at a model", ""]
    L.append(
        "Macro F1 (over the test fold's classes) of every fitted model on the clean test fold and its "
        "drop when the test pixels lose Sentinel-2 (SAR only), Sentinel-1 or the meteo, get S2 months "
        f"cloud-masked (winter cloudier) at {rates}, or a shifted S2 radiometry (x {cfg.get('s2_gain')} "
        f"{cfg.get('s2_offset'):+g}). Nothing is re-fitted. See "
        f"`{PLOTS['robustness']}`."
    )
    L.append("")
    rows = [
        [m, f"{r['clean']:.3f}", *[f"{-r[t]['drop']:+.3f}" for t in rob["transforms"]]]
        for m, r in sorted(rob["results"].items(), key=lambda kv: -kv[1]["clean"])
    ]
    L += _table(["model", "clean", *names], rows)
    L.append("")
    return L


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


def map_core_hours(pixels: float, px_per_s: float, threads: int = 1) -> float:
    """CPU core-hours to embed ``pixels`` at ``px_per_s`` measured with ``threads`` threads."""
    return pixels / px_per_s * threads / 3600


def write_partial_report(out: Path, results: list[dict[str, Any]], total: int, title: str | None) -> None:
    """Write ``report.md`` marked INCOMPLETE with the results so far (the full report replaces it).

    An interrupted evaluation so leaves what it measured, and says it is partial.
    """
    from cropssl.io.atomic import write_text

    lines = [
        f"# {title or 'cropssl evaluation'}",
        "",
        f"> **INCOMPLETE**: {len(results)} of {total} encoder x strategy results so far (the evaluation is "
        "running or was interrupted); no significance tests or checks yet.",
        "",
        "| model | macro F1 | 95 % CI |",
        "| --- | ---: | --- |",
        *(
            f"| {r['name']} | {r['macro_f1']:.3f} | {r['ci']['low']:.3f}-{r['ci']['high']:.3f} |"
            for r in results
        ),
    ]
    write_text(out / "report.md", "\n".join(lines) + "\n")


def _method_name(encoder: str | None, strategy: str) -> str:
    return strategy if encoder is None else f"{encoder} + {strategy}"


def evaluate(
    encoders: Sequence[str | EncoderSpec | Mapping[str, Any]],
    data: Sequence[str | Path],
    out: str | Path,
    *,
    legend: str | Mapping[Any, str] = "CROPTYPE24",
    min_count: int = 10,
    unknown: str = "drop",
    split: Callable[..., Split] | None = None,
    strategies: Sequence[str] = STRATEGIES,
    baselines: Sequence[str] = BASELINES,
    probes: Mapping[str, Mapping[str, Any]] | None = None,
    finetune: FinetuneConfig | Mapping[str, Any] | None = None,
    random_encoder: Mapping[str, Any] | None = None,
    group_keys: Sequence[str] = ("country", "year"),
    n_boot: int = 1000,
    confidence: float = 0.95,
    timesteps: int = 12,
    efficiency: Mapping[str, Any] | None = None,
    threads: int | None = None,
    save_heads: bool = False,
    seed: int = 0,
    title: str | None = None,
    command: str | None = None,
    config: Mapping[str, Any] | None = None,
    progress: bool = False,
    class_mappings: str | Path | None = None,
    robustness: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the protocol and write the report (see the module docstring).

    Args:
        encoders: Encoder specs (:func:`~cropssl.evaluation.encoders.resolve_encoder`).
        data: Labelled shard directories and / or WorldCereal files.
        out: Output directory.
        legend: Legend name or ``{code: name}`` mapping.
        min_count: Classes with fewer training samples fold into ``other``.
        unknown: Policy for codes the legend does not know.
        split: Split builder (a partial of :mod:`cropssl.evaluation.splits`); default stratified random.
        strategies: Subset of ``logreg, knn, catboost, finetune``.
        baselines: Subset of ``catboost_features, scratch``.
        probes: Hyper-parameters per probe kind (``{"catboost": {"iterations": 300}}``).
        finetune: Fine-tuning hyper-parameters (also used by ``scratch``).
        random_encoder: Architecture of ``random`` encoders and of the ``scratch`` baseline (default:
            Presto's).
        group_keys: Meta keys (or ``year``) for per-group metrics of the test fold.
        n_boot: Bootstrap resamples.
        confidence: CI coverage.
        timesteps: Months per sample window for files.
        efficiency: ``timesteps``, ``batch_size``, ``repeats`` of the throughput measurement.
        threads: Torch / BLAS / CatBoost threads (None = leave as is).
        save_heads: Write ``heads/<encoder>__<strategy>.joblib`` for ``cropssl-predict``.
        seed: Seed of probes, fine-tuning and the bootstrap.
        title: Report title.
        command: Command line to record in the report.
        config: Resolved config to record in ``results.json``.
        progress: Show progress bars.
        class_mappings: ``class_mappings.json`` holding the legend names (default: ``$CROPSSL_CLASS_MAPPINGS``
            or the shared WorldCereal data).
        robustness: ``enabled``, ``cloud_rates``, ``s2_gain``, ``s2_offset`` of the robustness checks
            (:mod:`cropssl.evaluation.robustness`); None = off.

    Returns:
        The content of ``results.json``.

    Raises:
        ValueError: unknown strategy / baseline / legend, empty test fold, no labelled sample.
        EncoderDataError: an encoder cannot take the data (names both).

    """
    import torch

    from cropssl.evaluation.metrics import bootstrap_macro_f1, classification_metrics, per_group_metrics

    t_start = time.perf_counter()
    bad = sorted(set(strategies) - set(STRATEGIES))
    if bad:
        raise ValueError(f"unknown strategies {bad}; choose from {list(STRATEGIES)}")
    bad = sorted(set(baselines) - set(BASELINES))
    if bad:
        raise ValueError(f"unknown baselines {bad}; choose from {list(BASELINES)}")
    if not encoders and not baselines:
        raise ValueError("nothing to evaluate: give encoders and / or baselines")
    if encoders and not strategies:
        raise ValueError("encoders given but no strategies")
    ft_cfg = finetune if isinstance(finetune, FinetuneConfig) else FinetuneConfig(**dict(finetune or {}))
    probes = {k: dict(v) for k, v in (probes or {}).items()}
    eff = {"timesteps": 12, "batch_size": 256, "repeats": 3, **dict(efficiency or {})}
    prev_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
            probes.setdefault("catboost", {}).setdefault("thread_count", int(threads))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}

        with warnings.catch_warnings(record=True) as caught, _threads(threads):
            warnings.simplefilter("always")
            # ---- data, labels, split
            t0 = time.perf_counter()
            load_legend(legend, class_mappings)
            samples, sources = load_data(data, timesteps)
            prep = prepare_data(
                samples,
                legend=legend,
                min_count=min_count,
                unknown=unknown,
                split=split,
                class_mappings=class_mappings,
            )
            s, y, classes, sp = prep.samples, prep.y, prep.classes, prep.split
            k = len(classes)
            tr, va, te = prep.fold("train"), prep.fold("val"), prep.fold("test")
            has_val = bool(va.any())
            split_rep = split_report(prep)
            from cropssl.evaluation.splits import save_split

            save_split(sp, out / "split.json")
            timings["data_and_split_s"] = time.perf_counter() - t0

            # ---- encoders
            loaded: list[LoadedEncoder] = []
            names_seen: set[str] = set()
            for e in encoders:
                le = resolve_encoder(e, random_config=random_encoder, seed=seed)
                base, i = le.name, 2
                while le.name in names_seen:
                    le.name, i = f"{base}#{i}", i + 1
                names_seen.add(le.name)
                data_name = "data " + ", ".join(Path(str(d)).name for d in data)
                le.info["compatibility"] = check_compatible(le, s, data_name)
                loaded.append(le)

            results: list[dict[str, Any]] = []
            total = len(loaded) * len(strategies) + len(baselines)
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="evaluating", unit="model", file=sys.stderr, disable=None)
            preds: dict[str, np.ndarray] = {}
            probas: dict[str, np.ndarray] = {}
            y_te = y[te]
            test_s = s.select(te)
            group_vals: dict[str, np.ndarray] = {}
            for key in group_keys:
                if key == "year":
                    group_vals[key] = np.asarray([str(int(v)) for v in test_s.year], dtype=object)
                elif key in test_s.meta:
                    group_vals[key] = np.asarray(test_s.meta[key], dtype=object).astype(str)
                else:
                    warnings.warn(
                        f"group key {key!r} not in the samples' meta; skipped",
                        EvaluationWarning,
                        stacklevel=2,
                    )

            def record(
                name: str,
                enc_name: str | None,
                strategy: str,
                pred: np.ndarray,
                proba: np.ndarray,
                cost: dict[str, Any] | None,
                fit_s: float,
                more: dict[str, Any] | None = None,
            ) -> None:
                m = classification_metrics(y_te, pred, classes)
                ci = bootstrap_macro_f1(
                    y_te, pred, n_boot=n_boot, confidence=confidence, seed=seed, n_classes=k
                )
                groups = {
                    key: {
                        g: {"n": v["n"], "macro_f1": v["macro_f1"], "accuracy": v["accuracy"]}
                        for g, v in per_group_metrics(y_te, pred, gv, classes).items()
                    }
                    for key, gv in group_vals.items()
                }
                results.append(
                    {
                        "name": name,
                        "encoder": enc_name,
                        "strategy": strategy,
                        "kind": "baseline" if enc_name is None or strategy == "scratch" else "encoder",
                        "macro_f1": m["macro_f1"],
                        "accuracy": m["accuracy"],
                        "ci": ci,
                        "metrics": m,
                        "per_group": groups,
                        "cost": cost,
                        "fit_seconds": round(fit_s, 2),
                        **(more or {}),
                    }
                )
                preds[name], probas[name] = pred, proba
                bar.update(1)
                log.info(
                    "%d/%d %s: macro F1 %.3f (%.3f-%.3f), fitted in %.1f s",
                    len(results), total, name, m["macro_f1"], ci["low"], ci["high"], fit_s,
                )  # fmt: skip
                write_partial_report(out, results, total, title)

            head_common = {
                "classes": classes,
                "legend": prep.label_encoder.to_dict(),
                "timesteps": int(s.timesteps),
                "bands": list(BANDS),
                "observed_bands": [b for i, b in enumerate(BANDS) if not s.mask[tr][..., i].all()],
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            heads_written: dict[str, str] = {}
            fitted: list[tuple[str, dict[str, Any], Any]] = []  # every model as a head, for robustness

            for le in loaded:
                t0 = time.perf_counter()
                cost = encoder_cost(
                    le.encoder, int(eff["timesteps"]), int(eff["batch_size"]), int(eff["repeats"])
                )
                le.info["cost"] = cost
                emb = None
                if any(st != "finetune" for st in strategies):
                    emb = embed_samples(le.encoder, s, progress=progress, desc=f"embedding ({le.name})")
                timings[f"embed_{le.name}_s"] = time.perf_counter() - t0
                enc_desc = le.describe()
                for st in strategies:
                    name = _method_name(le.name, st)
                    t0 = time.perf_counter()
                    head: dict[str, Any] = {"strategy": st, "encoder": enc_desc}
                    if le.kind == "random":
                        head["encoder_state"] = _state_numpy(le.encoder)
                    if st == "finetune":
                        r = _finetune(le.encoder, s, y, tr, va, te, has_val, k, ft_cfg)
                        fit_s = time.perf_counter() - t0
                        record(name, le.name, st, r.pred, r.proba, cost, fit_s, {"finetune": r.summary()})
                        model = r.model
                        head["encoder_state"] = _state_numpy(model.encoder)
                        head["encoder"] = {**enc_desc, "finetuned": True}
                        norm = model.norm
                        head["linear"] = {
                            "weight": model.head.weight.detach().numpy().copy(),
                            "bias": model.head.bias.detach().numpy().copy(),
                            "norm_mean": None
                            if not hasattr(norm, "running_mean")
                            else norm.running_mean.numpy().copy(),
                            "norm_var": None
                            if not hasattr(norm, "running_var")
                            else norm.running_var.numpy().copy(),
                            "norm_eps": float(getattr(norm, "eps", 0.0)),
                        }
                        head["classifier"] = None
                    else:
                        assert emb is not None
                        pred, proba, model = fit_probe(
                            st, emb[tr], y[tr], emb[te], n_classes=k, seed=seed, **probes.get(st, {})
                        )
                        fit_s = time.perf_counter() - t0
                        record(name, le.name, st, pred, proba, cost, fit_s)
                        head["classifier"] = model
                        head["constant_class"] = None if model is not None else int(np.unique(y[tr])[0])
                    fitted.append(
                        (name, {**head_common, **head}, model.encoder if st == "finetune" else le.encoder)
                    )
                    if save_heads:
                        head["metrics"] = {
                            "macro_f1": results[-1]["macro_f1"],
                            "accuracy": results[-1]["accuracy"],
                        }
                        p = save_head(
                            out / "heads" / f"{_safe(le.name)}__{st}.joblib", {**head_common, **head}
                        )
                        heads_written[name] = str(p.relative_to(out))
                    timings[f"{name}_s"] = time.perf_counter() - t0

            # ---- baselines
            if "catboost_features" in baselines:
                from cropssl.evaluation.features import compute_features

                t0 = time.perf_counter()
                feats, fnames = compute_features(s)
                pred, proba, model = fit_probe(
                    "catboost",
                    feats[tr],
                    y[tr],
                    feats[te],
                    n_classes=k,
                    seed=seed,
                    **probes.get("catboost", {}),
                )
                fit_s = time.perf_counter() - t0
                cost = _features_cost(model, test_s, int(eff["repeats"]))
                record(
                    "catboost_features",
                    None,
                    "catboost_features",
                    pred,
                    proba,
                    cost,
                    fit_s,
                    {"features": {"n": len(fnames), "names": fnames}},
                )
                head = {
                    "strategy": "catboost_features",
                    "encoder": None,
                    "classifier": model,
                    "constant_class": None if model is not None else int(np.unique(y[tr])[0]),
                    "feature_names": fnames,
                    "metrics": {"macro_f1": results[-1]["macro_f1"], "accuracy": results[-1]["accuracy"]},
                }
                fitted.append(("catboost_features", {**head_common, **head}, None))
                if save_heads:
                    p = save_head(out / "heads" / "catboost_features.joblib", {**head_common, **head})
                    heads_written["catboost_features"] = str(p.relative_to(out))
                timings["catboost_features_s"] = time.perf_counter() - t0
            if "scratch" in baselines:
                from cropssl.evaluation.finetune import scratch_encoder

                t0 = time.perf_counter()
                enc0 = scratch_encoder(random_encoder, seed=seed)
                cost = encoder_cost(enc0, int(eff["timesteps"]), int(eff["batch_size"]), int(eff["repeats"]))
                ft_s = dataclasses.replace(
                    ft_cfg, layer_decay=1.0, freeze_epochs=0, epochs=max(ft_cfg.epochs, 1)
                )
                r = _finetune(enc0, s, y, tr, va, te, has_val, k, ft_s)
                fit_s = time.perf_counter() - t0
                record(
                    "scratch",
                    None,
                    "scratch",
                    r.pred,
                    r.proba,
                    cost,
                    fit_s,
                    {"finetune": r.summary(), "encoder_config": enc0.config},
                )
                from cropssl.evaluation.encoders import weights_fingerprint

                head = {
                    "strategy": "finetune",
                    "encoder": {
                        "name": "scratch",
                        "spec": "random",
                        "kind": "random",
                        "config": enc0.config,
                        "fingerprint": weights_fingerprint(enc0),
                        "finetuned": True,
                    },
                    "encoder_state": _state_numpy(r.model.encoder),
                    "linear": {
                        "weight": r.model.head.weight.detach().numpy().copy(),
                        "bias": r.model.head.bias.detach().numpy().copy(),
                        "norm_mean": getattr(r.model.norm, "running_mean", None),
                        "norm_var": getattr(r.model.norm, "running_var", None),
                        "norm_eps": float(getattr(r.model.norm, "eps", 0.0)),
                    },
                    "classifier": None,
                    "metrics": {"macro_f1": results[-1]["macro_f1"], "accuracy": results[-1]["accuracy"]},
                }
                for key in ("norm_mean", "norm_var"):
                    if head["linear"][key] is not None:
                        head["linear"][key] = head["linear"][key].numpy().copy()
                fitted.append(("scratch", {**head_common, **head}, r.model.encoder))
                if save_heads:
                    p = save_head(out / "heads" / "scratch__finetune.joblib", {**head_common, **head})
                    heads_written["scratch"] = str(p.relative_to(out))
                timings["scratch_s"] = time.perf_counter() - t0

            # ---- statistics, outputs
            bar.close()
            robust = None
            if robustness and robustness.get("enabled", True):
                from cropssl.evaluation.robustness import evaluate_robustness

                t0 = time.perf_counter()
                robust = evaluate_robustness(fitted, test_s, y_te, robustness, seed=seed)
                timings["robustness_s"] = time.perf_counter() - t0
            sig = significance(results, y_te, preds, k, n_boot=n_boot, confidence=confidence, seed=seed)
            _write_predictions(out / "predictions.parquet", test_s, y_te, classes, preds)
        caught_msgs: list[str] = []
        for w in caught:
            if issubclass(w.category, (MissingClassWarning, UnknownCodeWarning, EvaluationWarning)):
                caught_msgs.append(f"{w.category.__name__}: {w.message}")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        timings["total_s"] = time.perf_counter() - t_start
        doc: dict[str, Any] = {
            "format": "cropssl-evaluation",
            "version": 1,
            "title": title or "cropssl evaluation",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "config": dict(config) if config is not None else None,
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "processor": platform.processor() or platform.machine(),
            },
            "data": {
                "sources": sources,
                "n_samples_read": len(samples),
                "n_evaluated": len(s),
                "timesteps": int(s.timesteps),
                "countries": {
                    str(c): int(n)
                    for c, n in zip(*np.unique(s.meta["country"].astype(str), return_counts=True))
                },
                "years": {str(c): int(n) for c, n in zip(*np.unique(s.year, return_counts=True))},
            },
            "labels": {
                "legend": prep.label_report.get("legend"),
                "min_count": min_count,
                "classes": classes,
                "report": prep.label_report,
            },
            "split": split_rep,
            "protocol": {
                "strategies": list(strategies),
                "baselines": list(baselines),
                "probes": probes,
                "finetune": dataclasses.asdict(ft_cfg),
                "random_encoder": dict(random_encoder or {}),
                "val_used_for": "early stopping of finetune / scratch"
                if has_val
                else f"no val fold: finetune / scratch carve {ft_cfg.val_size:.0%} of train to early-stop",
                "n_boot": n_boot,
                "confidence": confidence,
                "group_keys": list(group_keys),
                "efficiency": eff,
                "seed": seed,
            },
            "encoders": [le.describe() for le in loaded],
            "results": sorted(results, key=lambda r: -r["macro_f1"]),
            "significance": sig,
            "robustness": robust,
            "heads": heads_written,
            "warnings": prep.warnings
            + [m for m in caught_msgs if not any(m.endswith(p) for p in prep.warnings)],
            "timings": {kk: round(v, 2) for kk, v in timings.items()},
            "plots": dict(PLOTS),
            "n_test": int(te.sum()),
        }
        from cropssl.evaluation.checks import report_checks

        doc["checks"] = report_checks(doc)
        doc = _jsonable(doc)
        write_report(doc, out)
        return doc
    finally:
        torch.set_num_threads(prev_threads)


def _finetune(
    encoder: Any,
    s: PixelSamples,
    y: np.ndarray,
    tr: np.ndarray,
    va: np.ndarray,
    te: np.ndarray,
    has_val: bool,
    k: int,
    cfg: FinetuneConfig,
) -> Any:
    from cropssl.evaluation.finetune import finetune

    kw: dict[str, Any] = {}
    if has_val:
        kw.update(val=s.select(va), y_val=y[va])
    return finetune(encoder, s.select(tr), y[tr], s.select(te), n_classes=k, config=cfg, **kw)


def _features_cost(model: Any, test: PixelSamples, repeats: int) -> dict[str, Any]:
    """CPU throughput of the features + CatBoost pipeline on the test samples (best of ``repeats``)."""
    from cropssl.evaluation.features import compute_features

    best = float("inf")
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        f, _ = compute_features(test)
        if model is not None:
            model.predict_proba(f)
        best = min(best, time.perf_counter() - t0)
    return {
        "macs_per_pixel": None,
        "px_per_s": len(test) / best if best > 0 else None,
        "note": "hand-crafted features + CatBoost prediction on the test samples; no MACs count",
    }


def _write_predictions(
    path: Path, test: PixelSamples, y: np.ndarray, classes: list[str], preds: Mapping[str, np.ndarray]
) -> None:
    import pandas as pd

    names = np.asarray(classes, dtype=object)
    df = pd.DataFrame(
        {
            "sample_id": np.asarray(test.meta["sample_id"], dtype=object).astype(str),
            "country": np.asarray(test.meta["country"], dtype=object).astype(str),
            "year": test.year.astype(int),
            "true": names[y],
        }
    )
    for name, p in preds.items():
        df[name] = names[p]
    df.to_parquet(path, index=False)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


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


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _si(v: float | None) -> str:
    if v is None:
        return "–"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.2f} {unit}"
    return f"{v:.0f}"


def _delta_row(name: str, v: dict[str, Any], with_overlap: bool) -> list[str]:
    """A row of a significance table: method, paired delta, its CI, [CI overlap,] verdict."""
    pdl = v["paired_delta"]
    overlap = ["yes" if v["ci_overlap"] else "no"] if with_overlap else []
    verdict = "significant" if v["paired_significant"] else "not significant"
    return [name, f"{pdl['delta']:+.3f}", f"{pdl['low']:+.3f} to {pdl['high']:+.3f}", *overlap, verdict]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The text of ``report.md`` from the content of ``results.json``."""
    res = doc["results"]
    classes = doc["labels"]["classes"]
    lab = doc["labels"]["report"]
    sp = doc["split"]
    sig = doc["significance"] or {}
    conf = round(100 * doc["protocol"]["confidence"])
    n_test = doc["n_test"]
    L: list[str] = [f"# {doc['title']}", ""]
    L.append(
        f"Generated {doc['created']} by `cropssl-evaluate`"
        + (f": `{doc['command']}`" if doc.get("command") else "")
        + "."
    )
    L.append("")
    if doc.get("checks"):
        L.append("> **Read these before the scores** (self-checks of this evaluation):")
        L.append(">")
        L += [f"> - **{c['check']}**: {c['message']}" for c in doc["checks"]]
        L.append("")
    # ---- summary
    L += ["## Summary", ""]
    if res:
        best = res[0]
        L.append(
            f"- Best macro F1 on the test fold ({n_test} samples, {len(classes)} classes): "
            f"**{best['name']}** "
            f"{best['macro_f1']:.3f} ({conf}% CI {best['ci']['low']:.3f}–{best['ci']['high']:.3f})."
        )
        tied = [n for n, v in (sig.get("vs_best") or {}).items() if v["ci_overlap"]]
        sep = [n for n, v in (sig.get("vs_best") or {}).items() if not v["ci_overlap"]]
        if tied:
            L.append(f"- **Not significantly different from the best** (CIs overlap): {', '.join(tied)}.")
        if sep:
            L.append(f"- Clearly below the best (CIs do not overlap): {', '.join(sep)}.")
        base = sig.get("baseline")
        if base:
            above = [
                n
                for n, v in sig["vs_baseline"].items()
                if v["paired_significant"] and v["paired_delta"]["delta"] > 0
            ]
            below = [
                n
                for n, v in sig["vs_baseline"].items()
                if v["paired_significant"] and v["paired_delta"]["delta"] < 0
            ]
            same = [n for n, v in sig["vs_baseline"].items() if not v["paired_significant"]]
            L.append(
                f"- Against the deployed baseline `{base}` (paired bootstrap of the macro-F1 difference): "
                f"significantly better: {', '.join(above) or 'none'}; significantly worse: "
                f"{', '.join(below) or 'none'}; not significant: {', '.join(same) or 'none'}."
            )
        L.append(
            f"- With {n_test} test samples the {conf}% CIs are about "
            f"±{np.median([(r['ci']['high'] - r['ci']['low']) / 2 for r in res]):.2f} macro F1 wide: "
            "differences smaller than that are not evidence of a better encoder. The CIs resample test "
            "samples only; they do not include the variation from training seeds or from another split."
        )
    L.append("")
    L += rare_and_groups_markdown(doc)
    # ---- what
    L += ["## What was evaluated", ""]
    enc_rows = []
    for e in doc["encoders"]:
        c = e.get("cost") or {}
        enc_rows.append(
            [
                e["name"],
                e["kind"],
                f"`{e['spec']}`",
                e.get("ssl_method") or "–",
                e["embed_dim"],
                _si(e["parameters"]),
                _si(c.get("macs_per_pixel")),
                _fmt(c.get("px_per_s"), 0),
                (e.get("fingerprint") or "")[:12],
            ]
        )
    if enc_rows:
        L += _table(
            [
                "encoder",
                "kind",
                "source",
                "SSL method",
                "d",
                "params",
                "MACs/px",
                "px/s (CPU)",
                "weights sha256",
            ],
            enc_rows,
        )
        L.append("")
    pr = doc["protocol"]
    ft = pr["finetune"]
    L.append(
        f"- Strategies on every encoder: {', '.join(pr['strategies']) or 'none'}; baselines: "
        f"{', '.join(pr['baselines']) or 'none'}."
    )
    L.append(
        "- `logreg` / `knn` / `catboost`: probes on frozen embeddings, fitted on the train fold. "
        "`finetune`: encoder + linear head trained end to end (AdamW, lr "
        f"{ft['lr']:g}, layer-wise lr decay {ft['layer_decay']:g}, {ft['epochs']} epochs max, "
        f"freeze warm-up {ft['freeze_epochs']} epochs, class weighting `{ft['class_weight']}`, "
        f"balanced sampling {ft['balanced_sampling']}, early stopping on val macro F1 with patience "
        f"{ft['patience']})."
    )
    L.append(
        "- `catboost_features`: CatBoost on hand-crafted per-band percentiles + NDVI phenology "
        "(the deployed WorldCereal-style baseline). `scratch`: the fine-tuning recipe on a randomly "
        f"initialised encoder ({json.dumps(pr.get('random_encoder') or 'Presto architecture')}), no layer "
        "decay."
    )
    L.append(
        f"- Validation fold: {pr['val_used_for']}. Cost: MACs per pixel of the encoder forward pass "
        f"(T={pr['efficiency']['timesteps']}, all tokens present); px/s = best of "
        f"{pr['efficiency']['repeats']} CPU passes of batch {pr['efficiency']['batch_size']} with "
        f"{doc['environment']['torch_threads']} torch thread(s) (probe cost excluded, negligible)."
    )
    L.append("")
    # ---- data
    d = doc["data"]
    L += ["## Data", ""]
    L += _table(
        ["source", "format", "samples", "labelled"],
        [[f"`{x['path']}`", x["format"], x["samples"], x["labelled"]] for x in d["sources"]],
    )
    L.append("")
    L.append(
        f"{d['n_evaluated']} samples with a class of legend **{lab.get('legend')}** were evaluated "
        f"(T={d['timesteps']} monthly steps); countries {d['countries']}, years {d['years']}."
    )
    L.append("")
    L += ["### Labels", ""]
    L.append(
        f"- Classes (decided on the train + val folds, `min_count={doc['labels']['min_count']}`; samples in "
        "train + val / test): "
        + ", ".join(
            f"{c} ({sp['class_counts']['train'].get(c, 0) + sp['class_counts']['val'].get(c, 0)} / "
            f"{sp['class_counts']['test'].get(c, 0)})"
            for c in classes
        )
        + "."
    )
    L.append(
        f"- Excluded before the split: {lab.get('n_excluded_before_split', 0)} of {lab.get('n_total')} "
        f"samples ({lab.get('n_unlabelled', 0)} unlabelled, ignored classes {lab.get('ignored') or {}})."
    )
    L.append(
        f"- Unknown ewoc codes (policy `{lab.get('unknown_policy')}`): {lab.get('unknown_codes') or 'none'}."
    )
    L.append(
        f"- Folded into `other` (fewer than {doc['labels']['min_count']} training samples): "
        f"{lab.get('folded') or 'none'}."
    )
    L.append(
        f"- Classes absent from training (policy `{lab.get('unseen_policy')}`): "
        f"{lab.get('unseen') or 'none'}."
    )
    L.append("")
    # ---- split
    L += ["## Split", ""]
    L.append(f"- Builder: `{json.dumps(sp['info'])}`.")
    L.append(f"- Fold sizes: {sp['fold_sizes']}. The split is saved in `split.json`.")
    lk = sp["leakage"]
    status = {True: "**passed**", False: "**FAILED**", None: "not applicable"}[lk["passed"]]
    L.append(f"- Leakage check: {status} — {lk['message']}.")
    L.append("")
    folds = ["train", "val", "test"]
    rows = [[c, *[sp["class_counts"][f].get(c, 0) for f in folds]] for c in [*classes, "(unseen class)"]]
    L += _table(["class", *folds], rows)
    L.append("")
    # ---- results
    L += ["## Results", ""]
    rows = []
    for i, r in enumerate(res, 1):
        c = r.get("cost") or {}
        vs = (sig.get("vs_best") or {}).get(r["name"])
        mark = "best" if i == 1 else ("≈ best (CI overlap)" if vs and vs["ci_overlap"] else "below")
        rows.append(
            [
                i,
                r["name"],
                f"**{r['macro_f1']:.3f}**",
                f"{r['ci']['low']:.3f}–{r['ci']['high']:.3f}",
                f"{r['accuracy']:.3f}",
                _si(c.get("macs_per_pixel")),
                _fmt(c.get("px_per_s"), 0),
                _fmt(r["fit_seconds"], 1),
                mark,
            ]
        )
    L += _table(
        ["#", "method", "macro F1", f"{conf}% CI", "accuracy", "MACs/px", "px/s", "fit s", "vs best"], rows
    )
    L.append("")
    threads = doc["environment"].get("torch_threads", 1)
    costs = {e["name"]: (e.get("cost") or {}).get("px_per_s") for e in doc["encoders"]}
    if any(costs.values()):
        L += ["### Cost of a map", ""]
        L.append(
            f"CPU core-hours to embed every 10 m pixel of an area at the measured speed ({threads} "
            "thread(s), eager PyTorch; `experiments/benchmarks/vs_presto.py` measures the other backends): "
            "1 km² = 10,000 px, Kenya = 5.8e9 px."
        )
        L.append("")
        L += _table(
            ["encoder", "px/s", "core-s per km²", "core-hours, Kenya"],
            [
                [n, _fmt(v, 0), _fmt(1e4 / v * threads, 2), _fmt(map_core_hours(5.8e9, v, threads), 0)]
                for n, v in costs.items()
                if v
            ],
        )
        L.append("")
    L += robustness_markdown(doc.get("robustness"))
    if sig.get("vs_best"):
        L += ["### Which differences are significant", ""]
        L.append(
            f"Two tests against the best method ({sig['best']}): whether the {conf}% bootstrap CIs overlap "
            "(conservative), and a paired bootstrap of the difference on the same resampled test "
            "samples (a difference is significant when its CI excludes 0)."
        )
        L.append("")
        rows = [_delta_row(n, v, with_overlap=True) for n, v in sig["vs_best"].items()]
        L += _table(["method", "Δ macro F1 vs best", f"paired {conf}% CI", "CIs overlap", "verdict"], rows)
        L.append("")
        if sig.get("baseline") and sig.get("vs_baseline"):
            rows = [_delta_row(n, v, with_overlap=False) for n, v in sig["vs_baseline"].items()]
            L.append(f"Against the deployed baseline `{sig['baseline']}`:")
            L.append("")
            L += _table(["method", "Δ macro F1 vs baseline", f"paired {conf}% CI", "verdict"], rows)
            L.append("")
    # ---- per class
    L += ["### Per-class F1", ""]
    support = [res[0]["metrics"]["per_class"][c]["support"] for c in classes] if res else []
    rows = [
        [
            r["name"],
            *[
                f"{r['metrics']['per_class'][c]['f1']:.2f}" if n else "absent"
                for c, n in zip(classes, support)
            ],
        ]
        for r in res
    ]
    L += _table(["method", *[f"{c} (n={n})" for c, n in zip(classes, support)]], rows)
    L.append("")
    L.append(f"![per-class F1]({PLOTS['per_class_f1']})")
    L.append("")
    L.append(f"![confusion matrices]({PLOTS['confusion']})")
    L.append("")
    # ---- per group
    keys = [k for k in doc["protocol"]["group_keys"] if res and k in res[0]["per_group"]]
    if keys:
        L += ["### Per group (test fold)", ""]
        for key in keys:
            groups = sorted({g for r in res for g in r["per_group"].get(key, {})})
            ns = {
                g: next(r["per_group"][key][g]["n"] for r in res if g in r["per_group"][key]) for g in groups
            }
            rows = [
                [r["name"], *[_fmt((r["per_group"][key].get(g) or {}).get("macro_f1")) for g in groups]]
                for r in res
            ]
            L.append(f"Macro F1 per `{key}`:")
            L.append("")
            L += _table(["method", *[f"{g} (n={ns[g]})" for g in groups]], rows)
            L.append("")
    # ---- efficiency
    L += ["### Efficiency", ""]
    L.append(f"![macro F1 vs MACs per pixel]({PLOTS['frontier_macs']})")
    L.append("")
    L.append(f"![macro F1 vs pixels per second]({PLOTS['frontier_px_per_s']})")
    L.append("")
    # ---- fine-tuning details
    fts = [r for r in res if r.get("finetune")]
    if fts:
        L += ["### Fine-tuning runs", ""]
        rows = [
            [
                r["name"],
                r["finetune"]["n_train"],
                r["finetune"]["n_val"],
                r["finetune"]["epochs_run"],
                r["finetune"]["best_epoch"],
                _fmt(r["finetune"]["best_val_macro_f1"]),
                "yes" if r["finetune"]["stopped_early"] else "no",
                _fmt(r["finetune"]["seconds"], 1),
            ]
            for r in fts
        ]
        L += _table(
            [
                "method",
                "train",
                "val",
                "epochs run",
                "best epoch",
                "best val macro F1",
                "stopped early",
                "seconds",
            ],
            rows,
        )
        L.append("")
    if doc.get("heads"):
        L += ["### Saved heads (for `cropssl-predict`)", ""]
        L += [f"- {n}: `{p}`" for n, p in doc["heads"].items()]
        L.append("")
    L += ["## Warnings", ""]
    L += [f"- {w}" for w in doc.get("warnings") or []] or ["- none"]
    L.append("")
    L += ["## Reproduce", ""]
    t = doc["timings"]
    L.append(
        f"Wall time {t.get('total_s', 0):.0f} s on {doc['environment']['processor']} "
        f"({doc['environment']['torch_threads']} torch thread(s)), torch {doc['environment']['torch']}. "
        "Full config and all numbers: `results.json`; test predictions: `predictions.parquet`."
    )
    if doc.get("command"):
        L += ["", "```", doc["command"], "```"]
    L.append("")
    return "\n".join(L)


def write_report(doc: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``results.json``, the plots and ``report.md`` into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(doc, indent=1) + "\n")
    res = list(doc["results"])
    classes = list(doc["labels"]["classes"])
    plot_per_class_f1(res, classes, out / PLOTS["per_class_f1"])
    plot_confusions(res, classes, out / PLOTS["confusion"])
    plot_frontier(res, "macs_per_pixel", out / PLOTS["frontier_macs"])
    plot_frontier(res, "px_per_s", out / PLOTS["frontier_px_per_s"])
    if doc.get("robustness"):
        plot_robustness(doc["robustness"], out / PLOTS["robustness"])
    paths.update({k: out / v for k, v in PLOTS.items()})
    paths["report"].write_text(render_markdown(doc))
    return paths


__all__ = [
    "BASELINES",
    "HEAD_FORMAT",
    "STRATEGIES",
    "EvaluationWarning",
    "PreparedData",
    "evaluate",
    "fit_probe",
    "load_data",
    "load_head",
    "paired_bootstrap_delta",
    "prepare_data",
    "render_markdown",
    "save_head",
    "significance",
    "split_report",
    "write_report",
]
