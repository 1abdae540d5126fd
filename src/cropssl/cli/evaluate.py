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
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cropssl.config import CONFIG_DIR, ConfigKeyError, check_config, precheck_overrides
from cropssl.evaluation.config import EvaluateConfig, encoder_specs, field_names, schema_error

log = logging.getLogger("cropssl.evaluate")


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

    check_config(cfg, allowed=field_names())
    try:  # an untyped copy: keys added with `+` (Hydra opens the struct for them) fail here too
        container = OmegaConf.to_container(cfg, resolve=True)
        plain = OmegaConf.create(container)
        settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvaluateConfig), plain))
    except OmegaConfBaseException as exc:
        raise ConfigKeyError(schema_error(exc)) from None
    assert isinstance(settings, EvaluateConfig)
    doc = evaluate(
        encoder_specs(settings.encoders),
        settings.datasets,
        settings.out,
        split=instantiate(cfg.split) if cfg.get("split") is not None else None,
        finetune=instantiate(cfg.finetune) if cfg.get("finetune") is not None else None,
        command=_command(),
        config=container,
        **settings.evaluate_kwargs(),
    )
    best = doc["results"][0] if doc["results"] else None
    summary = {
        "out": str(settings.out),
        "n_test": doc["n_test"],
        "best": None if best is None else {"name": best["name"], "macro_f1": round(best["macro_f1"], 4)},
        "results": {r["name"]: round(r["macro_f1"], 4) for r in doc["results"]},
        "wall_time_s": doc["timings"]["total_s"],
    }
    print(json.dumps(summary, indent=2))
    return doc


@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
def evaluate_app(cfg: DictConfig) -> None:
    """The Hydra app: user errors print one line and exit with status 2."""
    from cropssl.evaluation.encoders import EncoderDataError

    try:
        run(cfg)
    except (ConfigKeyError, EncoderDataError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("CROPSSL_DEBUG"):
            raise
        print(f"cropssl-evaluate: error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Entry point of ``cropssl-evaluate``: a mistyped key is named with a suggestion before Hydra runs."""
    if os.environ.get("HYDRA_FULL_ERROR") != "1":
        precheck_overrides(sys.argv, "evaluate", "cropssl-evaluate")
    evaluate_app()


if __name__ == "__main__":
    main()
