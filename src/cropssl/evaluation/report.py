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
* with ``save_heads=True``: ``heads/<encoder>__<strategy>.safetensors`` per (encoder, strategy), the input of
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
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.artifacts import jsonable
from cropssl.evaluation.encoders import (
    EncoderSpec,
    LoadedEncoder,
    check_compatible,
    embed_samples,
    encoder_cost,
    resolve_encoder,
)
from cropssl.evaluation.finetune import FinetuneConfig
from cropssl.evaluation.heads import HEAD_FORMAT, _state_numpy, head_filename, load_head, save_head
from cropssl.evaluation.labels import LabelEncoder, UnknownCodeWarning, load_legend
from cropssl.evaluation.markdown import render_markdown, write_partial_report
from cropssl.evaluation.plots import (
    PLOTS,
    plot_confusions,
    plot_frontier,
    plot_per_class_f1,
    plot_robustness,
)
from cropssl.evaluation.splits import MissingClassWarning, Split, random_split
from cropssl.schema import BANDS, PixelSamples

log = logging.getLogger("cropssl.evaluate")

STRATEGIES: tuple[str, ...] = ("logreg", "knn", "catboost", "finetune")
BASELINES: tuple[str, ...] = ("catboost_features", "scratch")


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
    from cropssl.evaluation.metrics import confusion_matrix, scores_from_confusion

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
        fa = scores_from_confusion(
            np.bincount((ca[idx] + off).ravel(), minlength=b * k * k).reshape(b, k, k)
        )["macro_f1"]
        fb = scores_from_confusion(
            np.bincount((cb[idx] + off).ravel(), minlength=b * k * k).reshape(b, k, k)
        )["macro_f1"]
        deltas.append(fa - fb)
    d = np.concatenate(deltas)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    point = float(
        scores_from_confusion(confusion_matrix(y, pred_a, k))["macro_f1"]
        - scores_from_confusion(confusion_matrix(y, pred_b, k))["macro_f1"]
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
    agreement: Mapping[str, Any] | None = None,
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
        efficiency: ``timesteps``, ``batch_size``, ``repeats`` and ``backend`` (``torch``, ``onnx``,
            ``onnx-int8``, ``auto``: what runs export-dir encoders) of the throughput measurement.
        threads: Torch / BLAS / CatBoost threads (None = leave as is).
        save_heads: Write ``heads/<encoder>__<strategy>.safetensors`` for ``cropssl-predict``.
        seed: Seed of probes, fine-tuning and the bootstrap.
        title: Report title.
        command: Command line to record in the report.
        config: Resolved config to record in ``results.json``.
        progress: Show progress bars.
        class_mappings: ``class_mappings.json`` holding the legend names (default: ``$CROPSSL_CLASS_MAPPINGS``
            or the shared WorldCereal data).
        robustness: ``enabled``, ``cloud_rates``, ``s2_gain``, ``s2_offset`` of the robustness checks
            (:mod:`cropssl.evaluation.robustness`); None = off.
        agreement: ``cubes``: a list of ``{cube, reference, classes}`` to map with every head and compare
            with a reference product layer (:func:`cropssl.evaluation.agreement.heads_map_agreement`;
            implies ``save_heads``); None or no cubes = off.

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
    eff = {"timesteps": 12, "batch_size": 256, "repeats": 3, "backend": "torch", **dict(efficiency or {})}
    save_heads = save_heads or bool((agreement or {}).get("cubes"))  # the maps are made from the heads
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
                    le.encoder,
                    int(eff["timesteps"]),
                    int(eff["batch_size"]),
                    int(eff["repeats"]),
                    runner=_efficiency_runner(le, str(eff.get("backend", "torch"))),
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
                        p = save_head(out / "heads" / head_filename(le.name, st), {**head_common, **head})
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
                    p = save_head(
                        out / "heads" / head_filename(None, "catboost_features"), {**head_common, **head}
                    )
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
                    p = save_head(
                        out / "heads" / head_filename("scratch", "finetune"), {**head_common, **head}
                    )
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
        cubes = list((agreement or {}).get("cubes") or [])
        if cubes:
            from cropssl.evaluation.agreement import heads_map_agreement

            log.info("map agreement: %d cube(s) x %d head(s)", len(cubes), len(heads_written))
            f1 = {r["name"]: r["macro_f1"] for r in results}
            doc["agreement"] = heads_map_agreement(out, heads_written, cubes, f1, progress=progress)
        from cropssl.evaluation.checks import report_checks

        doc["checks"] = report_checks(doc)
        doc = jsonable(doc)
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


def _efficiency_runner(le: Any, backend: str) -> Any | None:
    """The backend that times an export-dir encoder (None: eager); others always run eagerly."""
    if backend == "torch":
        return None
    if le.kind != "export":
        log.info("%s: efficiency.backend=%s applies to export directories; timed eagerly", le.name, backend)
        return None
    from cropssl.backends import load_backend

    return load_backend(le.path, backend)


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
