"""The schema of a ``cropssl-evaluate`` config: one dataclass per block, registered with Hydra.

``configs/evaluate.yaml`` starts from ``evaluate_schema`` (this module's :class:`EvaluateConfig`), so Hydra
itself rejects a key that is not a field here (from the command line or a YAML file, naming the key) and a
value of the wrong type. The ``_target_`` nodes (``split``, ``finetune``, ``random_encoder``) stay untyped
here; :func:`cropssl.config.check_target_keys` checks them against their targets' signatures.

This module imports neither torch nor the evaluation stack: the CLI registers the schema before Hydra
composes anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from cropssl.config import ConfigKeyError, suggest

SCHEMA_NAME = "evaluate_schema"


@dataclass
class ProbesConfig:
    """Hyper-parameters per probe kind (see :func:`cropssl.evaluation.probes.make_probe`)."""

    logreg: dict[str, Any] = field(default_factory=lambda: {"C": 1.0, "max_iter": 2000})
    knn: dict[str, Any] = field(default_factory=lambda: {"k": 5})
    catboost: dict[str, Any] = field(default_factory=lambda: {"iterations": 300, "depth": 6})


@dataclass
class BootstrapConfig:
    """Resamples and coverage of the confidence intervals and paired tests."""

    n_boot: int = 1000
    confidence: float = 0.95


@dataclass
class EfficiencyConfig:
    """CPU cost measurement: MACs per pixel and best-of-``repeats`` px/s at ``batch_size``."""

    timesteps: int = 12
    batch_size: int = 256
    repeats: int = 3
    backend: str = "torch"
    embed: bool = False


@dataclass
class RobustnessConfig:
    """The degraded test folds of :mod:`cropssl.evaluation.robustness`."""

    enabled: bool = True
    cloud_rates: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    s2_gain: float = 1.1
    s2_offset: float = -100.0


@dataclass
class AgreementConfig:
    """Cubes to map with every fitted head and compare with a reference layer ({cube, reference, classes})."""

    cubes: list[Any] = field(default_factory=list)


@dataclass
class EvaluateConfig:
    """Every key of a ``cropssl-evaluate`` config (documented in ``configs/evaluate.yaml``)."""

    encoders: list[Any] = field(default_factory=lambda: ["presto", "random"])
    datasets: list[str] = field(default_factory=list)
    legend: Any = "CROPTYPE24"
    class_mappings: str | None = None
    min_count: int = 10
    unknown: str = "drop"
    timesteps: int = 12
    split: Any = None
    strategies: list[str] = field(default_factory=lambda: ["logreg", "knn", "catboost", "finetune"])
    baselines: list[str] = field(default_factory=lambda: ["catboost_features", "scratch"])
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    finetune: Any = None
    random_encoder: Any = None
    group_keys: list[str] = field(default_factory=lambda: ["country", "year"])
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    agreement: AgreementConfig = field(default_factory=AgreementConfig)
    threads: int | None = 1
    save_heads: bool = False
    seed: int = 0
    title: str | None = None
    out: str = "???"

    def evaluate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`cropssl.evaluation.report.evaluate` beyond encoders, data and out.

        The ``_target_`` nodes (``split``, ``finetune``) are left out: the caller instantiates them.
        """
        blocks = ("probes", "efficiency", "robustness", "agreement")
        kw: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("encoders", "datasets", "out", "split", "finetune", "bootstrap", *blocks)
        }
        kw.update({b: dataclasses.asdict(getattr(self, b)) for b in blocks})
        kw["random_encoder"] = {k: v for k, v in dict(self.random_encoder or {}).items() if k != "_target_"}
        kw["n_boot"], kw["confidence"] = self.bootstrap.n_boot, self.bootstrap.confidence
        if isinstance(self.legend, dict):
            kw["legend"] = {str(k): v for k, v in self.legend.items()}
        return kw


def field_names() -> frozenset[str]:
    """The top-level keys of an evaluation config (besides ``hydra``)."""
    return frozenset(f.name for f in dataclasses.fields(EvaluateConfig))


def _check_keys(node: Any, allowed: frozenset[str], where: str) -> None:
    for k in node or {}:
        if k not in allowed:
            raise ConfigKeyError(
                f"unknown config key {where}.{k}.{suggest(str(k), allowed)} Valid keys: {sorted(allowed)}"
            )


def encoder_specs(encoders: Any) -> list[Any]:
    """Validate the ``encoders`` list (strings or mappings of EncoderSpec fields) before loading anything."""
    from cropssl.evaluation.encoders import EncoderSpec

    if isinstance(encoders, str):
        encoders = [encoders]
    out: list[Any] = []
    for i, e in enumerate(encoders or []):
        if isinstance(e, str):
            out.append(e)
            continue
        if not isinstance(e, dict):
            raise ConfigKeyError(f"encoders[{i}] must be a spec string or a mapping, got {e!r}")
        fields = {f for f in EncoderSpec.__dataclass_fields__}
        _check_keys(e, frozenset(fields), f"encoders[{i}]")
        out.append(EncoderSpec(**e))
    return out


def schema_error(exc: Exception) -> str:
    """One line naming the key the schema rejected, with the closest valid names."""
    key, first = str(getattr(exc, "full_key", "") or "?"), str(exc).splitlines()[0]
    kind = getattr(exc, "object_type", None)
    if not dataclasses.is_dataclass(kind):
        return f"invalid evaluation config at {key}: {first}"
    valid = [f.name for f in dataclasses.fields(kind)]
    return f"unknown config key {key}.{suggest(key.rpartition('.')[2], valid)} Valid keys: {valid}"


ConfigStore.instance().store(name=SCHEMA_NAME, node=EvaluateConfig)
