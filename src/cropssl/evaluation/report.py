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
* ``split.json`` (the split, reloadable with :func:`~cropssl.evaluation.split_files.load_split`) and
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
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.artifacts import jsonable
from cropssl.evaluation.config import EfficiencyConfig
from cropssl.evaluation.data import PreparedData, load_data, prepare_data, split_report
from cropssl.evaluation.encoders import (
    EncoderSpec,
    LoadedEncoder,
    check_compatible,
    resolve_encoder,
)
from cropssl.evaluation.finetune import FinetuneConfig
from cropssl.evaluation.heads import HEAD_FORMAT, load_head, save_head
from cropssl.evaluation.labels import UnknownCodeWarning, load_legend
from cropssl.evaluation.markdown import render_markdown
from cropssl.evaluation.metrics import paired_bootstrap_delta
from cropssl.evaluation.plots import (
    PLOTS,
    plot_confusions,
    plot_frontier,
    plot_per_class_f1,
    plot_robustness,
)
from cropssl.evaluation.probes import fit_probe
from cropssl.evaluation.protocol import EvaluationWarning, Protocol
from cropssl.evaluation.split_files import save_split
from cropssl.evaluation.splits import MissingClassWarning, Split
from cropssl.schema import PixelSamples

log = logging.getLogger("cropssl.evaluate")

STRATEGIES: tuple[str, ...] = ("logreg", "knn", "catboost", "finetune")
BASELINES: tuple[str, ...] = ("catboost_features", "scratch")


# ---------------------------------------------------------------------------------------------- statistics
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
        efficiency: ``timesteps``, ``batch_size``, ``repeats`` and ``backend`` (``torch``, ``torch-bf16``,
            ``torch-int8``, ``onnx``, ``onnx-int8``, ``auto``: what runs export-dir encoders) of the
            throughput measurement; ``embed: true`` has the frozen probes of export-dir encoders read that
            backend's embeddings.
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

    t_start = time.perf_counter()
    _check_request(encoders, strategies, baselines)
    ft_cfg = finetune if isinstance(finetune, FinetuneConfig) else FinetuneConfig(**dict(finetune or {}))
    probes = {k: dict(v) for k, v in (probes or {}).items()}
    eff = {**dataclasses.asdict(EfficiencyConfig()), **dict(efficiency or {})}
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
            t0 = time.perf_counter()
            load_legend(legend, class_mappings)
            samples, sources = load_data(data, timesteps)
            prep = prepare_data(
                samples, legend=legend, min_count=min_count, unknown=unknown, split=split,
                class_mappings=class_mappings,
            )  # fmt: skip
            split_rep = split_report(prep)
            save_split(prep.split, out / "split.json")
            timings["data_and_split_s"] = time.perf_counter() - t0
            loaded = _load_encoders(encoders, random_encoder, seed, prep.samples, data)
            run = Protocol(
                prep, out, n_boot=n_boot, confidence=confidence, seed=seed, group_keys=group_keys,
                total=len(loaded) * len(strategies) + len(baselines), title=title, save_heads=save_heads,
                probes=probes, efficiency=eff, progress=progress, timings=timings,
            )  # fmt: skip
            robust, sig = _run_protocol(
                run, loaded, strategies, baselines, ft_cfg, random_encoder, robustness
            )
        timings["total_s"] = time.perf_counter() - t_start
        protocol = {
            "strategies": list(strategies),
            "baselines": list(baselines),
            "probes": probes,
            "finetune": dataclasses.asdict(ft_cfg),
            "random_encoder": dict(random_encoder or {}),
            "val_used_for": "early stopping of finetune / scratch"
            if prep.fold("val").any()
            else f"no val fold: finetune / scratch carve {ft_cfg.val_size:.0%} of train to early-stop",
            "n_boot": n_boot,
            "confidence": confidence,
            "group_keys": list(group_keys),
            "efficiency": eff,
            "seed": seed,
        }
        doc = _document(
            title=title, command=command, config=config,
            data=_data_summary(sources, len(samples), prep.samples), prep=prep, min_count=min_count,
            split_rep=split_rep, protocol=protocol, loaded=loaded,
            results=run.results, sig=sig, robust=robust, heads=run.heads, caught=_reraise(caught),
            timings=timings, n_test=int(prep.fold("test").sum()),
        )  # fmt: skip
        cubes = list((agreement or {}).get("cubes") or [])
        if cubes:
            from cropssl.evaluation.agreement import heads_map_agreement

            log.info("map agreement: %d cube(s) x %d head(s)", len(cubes), len(run.heads))
            f1 = {r["name"]: r["macro_f1"] for r in run.results}
            doc["agreement"] = heads_map_agreement(out, run.heads, cubes, f1, progress=progress)
        from cropssl.evaluation.checks import report_checks

        doc["checks"] = report_checks(doc)
        doc = jsonable(doc)
        write_report(doc, out)
        return doc
    finally:
        torch.set_num_threads(prev_threads)


def _run_protocol(
    run: Protocol, loaded: list[LoadedEncoder], strategies: Sequence[str], baselines: Sequence[str],
    ft_cfg: FinetuneConfig, random_encoder: Mapping[str, Any] | None, robustness: Mapping[str, Any] | None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Every encoder x strategy and the baselines, then robustness, significance and the predictions file.

    Returns:
        The robustness block (None when off) and the significance block.

    """
    for le in loaded:
        run.run_encoder(le, strategies, ft_cfg, _efficiency_runner(le, str(run.efficiency["backend"])))
    if "catboost_features" in baselines:
        run.run_catboost_features()
    if "scratch" in baselines:
        run.run_scratch(random_encoder, ft_cfg)
    run.bar.close()
    robust = None
    if robustness and robustness.get("enabled", True):
        from cropssl.evaluation.robustness import evaluate_robustness

        t0 = time.perf_counter()
        robust = evaluate_robustness(run.fitted, run.test, run.y_te, robustness, seed=run.seed)
        run.timings["robustness_s"] = time.perf_counter() - t0
    k = len(run.prep.classes)
    sig = significance(
        run.results, run.y_te, run.preds, k, n_boot=run.n_boot, confidence=run.confidence, seed=run.seed
    )
    _write_predictions(run.out / "predictions.parquet", run.test, run.y_te, run.prep.classes, run.preds)
    return robust, sig


def _reraise(caught: list[warnings.WarningMessage]) -> list[str]:
    """Re-emit the warnings recorded during the protocol; return the report-worthy ones as text."""
    msgs: list[str] = []
    for w in caught:
        if issubclass(w.category, (MissingClassWarning, UnknownCodeWarning, EvaluationWarning)):
            msgs.append(f"{w.category.__name__}: {w.message}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return msgs


def _check_request(encoders: Sequence[Any], strategies: Sequence[str], baselines: Sequence[str]) -> None:
    """Refuse unknown strategies / baselines and an empty request before anything is loaded."""
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


def _load_encoders(
    encoders: Sequence[Any], random_encoder: Mapping[str, Any] | None, seed: int, samples: PixelSamples,
    data: Sequence[str | Path],
) -> list[LoadedEncoder]:  # fmt: skip
    """Resolve every encoder spec (names made unique: ``name#2``) and check it can take the data."""
    loaded: list[LoadedEncoder] = []
    names_seen: set[str] = set()
    data_name = "data " + ", ".join(Path(str(d)).name for d in data)
    for e in encoders:
        le = resolve_encoder(e, random_config=random_encoder, seed=seed)
        base, i = le.name, 2
        while le.name in names_seen:
            le.name, i = f"{base}#{i}", i + 1
        names_seen.add(le.name)
        le.info["compatibility"] = check_compatible(le, samples, data_name)
        loaded.append(le)
    return loaded


def _document(
    *, title: str | None, command: str | None, config: Mapping[str, Any] | None, data: dict[str, Any],
    prep: PreparedData, min_count: int, split_rep: dict[str, Any], protocol: dict[str, Any],
    loaded: list[LoadedEncoder], results: list[dict[str, Any]], sig: dict[str, Any], robust: Any,
    heads: dict[str, str], caught: list[str], timings: dict[str, float], n_test: int,
) -> dict[str, Any]:  # fmt: skip
    """The content of ``results.json`` (before map agreement and the self-checks are added)."""
    return {
        "format": "cropssl-evaluation",
        "version": 1,
        "title": title or "cropssl evaluation",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "config": dict(config) if config is not None else None,
        "environment": _environment(),
        "data": data,
        "labels": {
            "legend": prep.label_report.get("legend"),
            "min_count": min_count,
            "classes": prep.classes,
            "report": prep.label_report,
        },
        "split": split_rep,
        "protocol": protocol,
        "encoders": [le.describe() for le in loaded],
        "results": sorted(results, key=lambda r: -r["macro_f1"]),
        "significance": sig,
        "robustness": robust,
        "heads": heads,
        "warnings": prep.warnings + [m for m in caught if not any(m.endswith(p) for p in prep.warnings)],
        "timings": {kk: round(v, 2) for kk, v in timings.items()},
        "plots": dict(PLOTS),
        "n_test": n_test,
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


def _environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def _data_summary(sources: list[dict[str, Any]], n_read: int, s: PixelSamples) -> dict[str, Any]:
    def counts(values: np.ndarray) -> dict[str, int]:
        return {str(c): int(n) for c, n in zip(*np.unique(values, return_counts=True))}

    return {
        "sources": sources,
        "n_samples_read": n_read,
        "n_evaluated": len(s),
        "timesteps": int(s.timesteps),
        "countries": counts(s.meta["country"].astype(str)),
        "years": counts(s.year),
    }


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
