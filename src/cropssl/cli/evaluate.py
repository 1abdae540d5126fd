r"""``cropssl-evaluate``: compare encoders (and baselines) on labelled crop data; write a standalone report.

Examples::

    cropssl-evaluate                                      # presto + random on East Africa, random split
    cropssl-evaluate encoders=[presto,exports/mae-v1] legend=LANDCOVER10 \
        datasets=[../shared/data/worldcereal/2022_FRA_LPIS_month.geoparquet] out=evals/fra
    cropssl-evaluate split=geographic split.key=country split.test_groups=[SSD] out=evals/ea-geo
    cropssl-evaluate strategies=[logreg] baselines=[catboost_features] save_heads=true out=evals/quick

The labelled data are given as ``datasets=[...]`` (shard dirs and/or WorldCereal parquet files): the key
cannot be ``data`` because ``configs/data/`` is a config group (of ``cropssl-pretrain``), so Hydra would
read ``data=[...]`` as a choice of that group.

Writes ``report.md``, ``results.json``, plots, ``split.json``, ``predictions.parquet`` (and ``heads/``) into
``out``; see :mod:`cropssl.evaluation.report`. Errors in the inputs (unknown legend, empty test fold,
encoder / data mismatch, config typos) exit with status 2 and a one-line message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from cropssl.config import CONFIG_DIR, ConfigKeyError, check_config

log = logging.getLogger("cropssl.evaluate")

#: Keys allowed at the top of an evaluation config (besides ``hydra``).
EVALUATE_KEYS = frozenset(
    {
        "encoders",
        "datasets",
        "legend",
        "class_mappings",
        "min_count",
        "unknown",
        "timesteps",
        "split",
        "strategies",
        "baselines",
        "probes",
        "finetune",
        "random_encoder",
        "group_keys",
        "bootstrap",
        "efficiency",
        "robustness",
        "agreement",
        "threads",
        "save_heads",
        "seed",
        "title",
        "out",
    }
)
PROBE_KEYS = frozenset({"logreg", "knn", "catboost"})
BOOTSTRAP_KEYS = frozenset({"n_boot", "confidence"})
EFFICIENCY_KEYS = frozenset({"timesteps", "batch_size", "repeats", "backend"})
ROBUSTNESS_KEYS = frozenset({"enabled", "cloud_rates", "s2_gain", "s2_offset"})
AGREEMENT_KEYS = frozenset({"cubes"})


def _check_keys(node: Any, allowed: frozenset[str], where: str) -> None:
    from cropssl.config import suggest

    for k in node or {}:
        if k not in allowed:
            raise ConfigKeyError(
                f"unknown config key {where}.{k}.{suggest(str(k), allowed)} Valid keys: {sorted(allowed)}"
            )


def _encoder_specs(encoders: Any) -> list[Any]:
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


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return list(v)


def _command() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(["cropssl-evaluate", *HydraConfig.get().overrides.task])
    except Exception:
        return " ".join(["cropssl-evaluate", *sys.argv[1:]])


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation described by a composed config; returns the content of ``results.json``."""
    from hydra.utils import instantiate

    from cropssl.evaluation.report import evaluate

    check_config(cfg, allowed=EVALUATE_KEYS)
    _check_keys(cfg.get("probes"), PROBE_KEYS, "probes")
    _check_keys(cfg.get("bootstrap"), BOOTSTRAP_KEYS, "bootstrap")
    _check_keys(cfg.get("efficiency"), EFFICIENCY_KEYS, "efficiency")
    _check_keys(cfg.get("robustness"), ROBUSTNESS_KEYS, "robustness")
    _check_keys(cfg.get("agreement"), AGREEMENT_KEYS, "agreement")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    encoders = _encoder_specs(container.get("encoders"))
    split_fn = instantiate(cfg.split) if cfg.get("split") is not None else None
    finetune_cfg = instantiate(cfg.finetune) if cfg.get("finetune") is not None else None
    random_encoder = dict(container.get("random_encoder") or {})
    random_encoder.pop("_target_", None)
    bootstrap = dict(container.get("bootstrap") or {})
    legend = container["legend"]
    if isinstance(cfg.legend, (DictConfig, ListConfig)):
        legend = {str(k): v for k, v in dict(legend).items()}
    doc = evaluate(
        encoders,
        _list(container.get("datasets")),
        container["out"],
        legend=legend,
        min_count=int(container.get("min_count", 1)),
        unknown=str(container.get("unknown", "drop")),
        split=split_fn,
        strategies=_list(container.get("strategies")),
        baselines=_list(container.get("baselines")),
        probes=container.get("probes") or {},
        finetune=finetune_cfg,
        random_encoder=random_encoder,
        group_keys=_list(container.get("group_keys")),
        n_boot=int(bootstrap.get("n_boot", 1000)),
        confidence=float(bootstrap.get("confidence", 0.95)),
        timesteps=int(container.get("timesteps", 12)),
        efficiency=container.get("efficiency") or {},
        threads=container.get("threads"),
        save_heads=bool(container.get("save_heads", False)),
        seed=int(container.get("seed", 0)),
        title=container.get("title"),
        command=_command(),
        config=container,
        class_mappings=container.get("class_mappings"),
        robustness=container.get("robustness"),
        agreement=container.get("agreement"),
    )
    best = doc["results"][0] if doc["results"] else None
    summary = {
        "out": str(container["out"]),
        "n_test": doc["n_test"],
        "best": None if best is None else {"name": best["name"], "macro_f1": round(best["macro_f1"], 4)},
        "results": {r["name"]: round(r["macro_f1"], 4) for r in doc["results"]},
        "wall_time_s": doc["timings"]["total_s"],
    }
    print(json.dumps(summary, indent=2))
    return doc


@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``cropssl-evaluate``."""
    from cropssl.evaluation.encoders import EncoderDataError

    try:
        run(cfg)
    except (ConfigKeyError, EncoderDataError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("CROPSSL_DEBUG"):
            raise
        print(f"cropssl-evaluate: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
