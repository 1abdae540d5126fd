"""One evaluation run, step by step: each encoder with each strategy, then the baselines.

:class:`Protocol` holds what every step adds to (results, test predictions, fitted heads, timings) and
scores each model the same way (:meth:`Protocol.record`: metrics, bootstrap CI, per-group metrics, the
partial report). :func:`cropssl.evaluation.report.evaluate` prepares the data and encoders, runs the
steps and writes the document.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.evaluation.data import PreparedData
from cropssl.evaluation.encoders import LoadedEncoder, embed_samples, encoder_cost, weights_fingerprint
from cropssl.evaluation.finetune import FinetuneConfig
from cropssl.evaluation.heads import head_filename, save_head, state_numpy
from cropssl.evaluation.markdown import write_partial_report
from cropssl.evaluation.probes import fit_probe
from cropssl.schema import BANDS, PixelSamples

log = logging.getLogger("cropssl.evaluate")


class EvaluationWarning(UserWarning):
    """Something in the evaluation deserves attention (listed in the report)."""


def method_name(encoder: str | None, strategy: str) -> str:
    """``<encoder> + <strategy>`` (the strategy alone for baselines)."""
    return strategy if encoder is None else f"{encoder} + {strategy}"


def finetuned_head(result: Any) -> dict[str, Any]:
    """The head of a fine-tuned model: its encoder weights and the linear layer with its input norm."""
    model = result.model
    norm = model.norm

    def stat(name: str) -> np.ndarray | None:
        v = getattr(norm, name, None)
        return None if v is None else v.detach().cpu().numpy().copy()

    return {
        "encoder_state": state_numpy(model.encoder),
        "linear": {
            "weight": model.head.weight.detach().numpy().copy(),
            "bias": model.head.bias.detach().numpy().copy(),
            "norm_mean": stat("running_mean"),
            "norm_var": stat("running_var"),
            "norm_eps": float(getattr(norm, "eps", 0.0)),
        },
        "classifier": None,
    }


@dataclasses.dataclass
class Protocol:
    """The state of one evaluation run and its steps.

    Attributes:
        prep: The labelled samples, classes and split.
        out: Output directory (partial report, heads).
        n_boot: Bootstrap resamples of every CI.
        confidence: CI coverage.
        seed: Seed of probes, fine-tuning and the bootstrap.
        group_keys: Meta keys (or ``year``) of the per-group metrics.
        total: Number of models the run will score (progress and partial report).
        title: Report title (partial report).
        save_heads: Write every fitted head to ``out/heads``.
        probes: Hyper-parameters per probe kind.
        efficiency: ``timesteps``, ``batch_size``, ``repeats`` of the throughput measurement.
        progress: Show progress bars.

    """

    prep: PreparedData
    out: Path
    n_boot: int
    confidence: float
    seed: int
    group_keys: Sequence[str]
    total: int
    title: str | None = None
    save_heads: bool = False
    probes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    efficiency: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool = False
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    preds: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    probas: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    heads: dict[str, str] = dataclasses.field(default_factory=dict)
    fitted: list[tuple[str, dict[str, Any], Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        p, s = self.prep, self.prep.samples
        self.tr, self.va, self.te = p.fold("train"), p.fold("val"), p.fold("test")
        self.has_val = bool(self.va.any())
        self.k = len(p.classes)
        self.y_te = p.y[self.te]
        self.test = s.select(self.te)
        self.group_values = self._group_values()
        self.head_common = {
            "classes": p.classes,
            "legend": p.label_encoder.to_dict(),
            "timesteps": int(s.timesteps),
            "bands": list(BANDS),
            "observed_bands": [b for i, b in enumerate(BANDS) if not s.mask[self.tr][..., i].all()],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.bar = tqdm(total=self.total, desc="evaluating", unit="model", file=sys.stderr, disable=None)

    def _group_values(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in self.group_keys:
            if key == "year":
                out[key] = np.asarray([str(int(v)) for v in self.test.year], dtype=object)
            elif key in self.test.meta:
                out[key] = np.asarray(self.test.meta[key], dtype=object).astype(str)
            else:
                warnings.warn(
                    f"group key {key!r} not in the samples' meta; skipped", EvaluationWarning, stacklevel=3
                )
        return out

    # ------------------------------------------------------------------------------------------ scoring
    def record(
        self,
        name: str,
        enc_name: str | None,
        strategy: str,
        pred: np.ndarray,
        proba: np.ndarray,
        cost: dict[str, Any] | None,
        fit_s: float,
        more: dict[str, Any] | None = None,
    ) -> None:
        """Score one model on the test fold and add it to the results (and the partial report)."""
        from cropssl.evaluation.metrics import bootstrap_macro_f1, classification_metrics, per_group_metrics

        classes, y_te = self.prep.classes, self.y_te
        m = classification_metrics(y_te, pred, classes)
        ci = bootstrap_macro_f1(
            y_te, pred, n_boot=self.n_boot, confidence=self.confidence, seed=self.seed, n_classes=self.k
        )
        groups = {
            key: {
                g: {"n": v["n"], "macro_f1": v["macro_f1"], "accuracy": v["accuracy"]}
                for g, v in per_group_metrics(y_te, pred, gv, classes).items()
            }
            for key, gv in self.group_values.items()
        }
        self.results.append(
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
        self.preds[name], self.probas[name] = pred, proba
        self.bar.update(1)
        log.info(
            "%d/%d %s: macro F1 %.3f (%.3f-%.3f), fitted in %.1f s",
            len(self.results), self.total, name, m["macro_f1"], ci["low"], ci["high"], fit_s,
        )  # fmt: skip
        write_partial_report(self.out, self.results, self.total, self.title)

    def keep(self, name: str, head: dict[str, Any], encoder: Any, filename: str) -> None:
        """Keep a fitted model as a head (robustness checks) and write it when heads are saved."""
        head = {**self.head_common, **head}
        self.fitted.append((name, head, encoder))
        if self.save_heads:
            last = self.results[-1]
            head["metrics"] = {"macro_f1": last["macro_f1"], "accuracy": last["accuracy"]}
            p = save_head(self.out / "heads" / filename, head)
            self.heads[name] = str(p.relative_to(self.out))

    def _cost(self, encoder: Any, runner: Any | None = None) -> dict[str, Any]:
        e = self.efficiency
        return encoder_cost(
            encoder, int(e["timesteps"]), int(e["batch_size"]), int(e["repeats"]), runner=runner
        )

    def _finetune(self, encoder: Any, cfg: FinetuneConfig) -> Any:
        from cropssl.evaluation.finetune import finetune

        s, y = self.prep.samples, self.prep.y
        kw: dict[str, Any] = {}
        if self.has_val:
            kw.update(val=s.select(self.va), y_val=y[self.va])
        return finetune(encoder, s.select(self.tr), y[self.tr], self.test, n_classes=self.k, config=cfg, **kw)

    # ------------------------------------------------------------------------------------------ steps
    def run_encoder(
        self, le: LoadedEncoder, strategies: Sequence[str], ft_cfg: FinetuneConfig, runner: Any | None
    ) -> None:
        """Every strategy on one encoder: probes on its frozen embeddings, fine-tuning."""
        s, y, tr, te = self.prep.samples, self.prep.y, self.tr, self.te
        t0 = time.perf_counter()
        emb = None
        # efficiency.embed: the probes read the backend's embeddings (a backend calibrated on its first
        # pixels sees the data before the timing's synthetic batch)
        embedder = runner if runner is not None and self.efficiency.get("embed") else le.encoder
        if any(st != "finetune" for st in strategies):
            emb = embed_samples(embedder, s, progress=self.progress, desc=f"embedding ({le.name})")
        cost = self._cost(le.encoder, runner)
        cost["embedded_by"] = str(getattr(embedder, "backend", "torch"))
        le.info["cost"] = cost
        self.timings[f"embed_{le.name}_s"] = time.perf_counter() - t0
        enc_desc = le.describe()
        for st in strategies:
            name = method_name(le.name, st)
            t0 = time.perf_counter()
            head: dict[str, Any] = {"strategy": st, "encoder": enc_desc}
            if le.kind == "random":
                head["encoder_state"] = state_numpy(le.encoder)
            if st == "finetune":
                r = self._finetune(le.encoder, ft_cfg)
                self.record(name, le.name, st, r.pred, r.proba, cost, time.perf_counter() - t0,
                            {"finetune": r.summary()})  # fmt: skip
                head.update(finetuned_head(r), encoder={**enc_desc, "finetuned": True})
                encoder = r.model.encoder
            else:
                assert emb is not None
                pred, proba, model = fit_probe(
                    st, emb[tr], y[tr], emb[te], n_classes=self.k, seed=self.seed, **self.probes.get(st, {})
                )
                self.record(name, le.name, st, pred, proba, cost, time.perf_counter() - t0)
                head["classifier"] = model
                head["constant_class"] = None if model is not None else int(np.unique(y[tr])[0])
                encoder = le.encoder
            self.keep(name, head, encoder, head_filename(le.name, st))
            self.timings[f"{name}_s"] = time.perf_counter() - t0

    def run_catboost_features(self) -> None:
        """The deployed baseline: CatBoost on hand-crafted percentile + phenology features."""
        from cropssl.evaluation.features import compute_features

        y, tr, te = self.prep.y, self.tr, self.te
        t0 = time.perf_counter()
        feats, fnames = compute_features(self.prep.samples)
        pred, proba, model = fit_probe(
            "catboost", feats[tr], y[tr], feats[te], n_classes=self.k, seed=self.seed,
            **self.probes.get("catboost", {}),
        )  # fmt: skip
        fit_s = time.perf_counter() - t0
        cost = _features_cost(model, self.test, int(self.efficiency["repeats"]))
        self.record("catboost_features", None, "catboost_features", pred, proba, cost, fit_s,
                    {"features": {"n": len(fnames), "names": fnames}})  # fmt: skip
        head = {
            "strategy": "catboost_features",
            "encoder": None,
            "classifier": model,
            "constant_class": None if model is not None else int(np.unique(y[tr])[0]),
            "feature_names": fnames,
        }
        self.keep("catboost_features", head, None, head_filename(None, "catboost_features"))
        self.timings["catboost_features_s"] = time.perf_counter() - t0

    def run_scratch(self, random_encoder: Mapping[str, Any] | None, ft_cfg: FinetuneConfig) -> None:
        """The fine-tuning recipe on a randomly initialised encoder (no layer decay, no frozen epochs)."""
        from cropssl.evaluation.finetune import scratch_encoder

        t0 = time.perf_counter()
        enc0 = scratch_encoder(random_encoder, seed=self.seed)
        cost = self._cost(enc0)
        cfg = dataclasses.replace(ft_cfg, layer_decay=1.0, freeze_epochs=0, epochs=max(ft_cfg.epochs, 1))
        fingerprint = weights_fingerprint(enc0)
        r = self._finetune(enc0, cfg)
        self.record("scratch", None, "scratch", r.pred, r.proba, cost, time.perf_counter() - t0,
                    {"finetune": r.summary(), "encoder_config": enc0.config})  # fmt: skip
        head = {
            "strategy": "finetune",
            "encoder": {"name": "scratch", "spec": "random", "kind": "random", "config": enc0.config,
                        "fingerprint": fingerprint, "finetuned": True},
            **finetuned_head(r),
        }  # fmt: skip
        self.keep("scratch", head, r.model.encoder, head_filename("scratch", "finetune"))
        self.timings["scratch_s"] = time.perf_counter() - t0


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
