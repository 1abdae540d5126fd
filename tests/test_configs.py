"""Config composition: every option of every pre-training config group composes, passes the strict key
checks and instantiates (lightning-hydra-template style)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cropssl.config import CONFIG_DIR, check_config

GROUPS = [
    "augment",
    "callbacks",
    "data",
    "encoder",
    "experiment",
    "hparams_search",
    "logger",
    "method",
    "start",
    "trainer",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONFIG_DIR / g).glob("*.yaml"))]
EXTRA = {"start/from_weights": ["start.source=presto"]}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_config_option_composes_and_passes_the_strict_checks(group, option):
    overrides = [f"{group}={option}", *EXTRA.get(f"{group}/{option}", [])]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides, return_hydra_config=False)
    check_config(cfg)  # unknown keys anywhere would raise here, naming the key
    assert cfg.method.name and cfg.encoder._target_
    if group in ("augment", "encoder"):
        assert instantiate(cfg[group]) is not None


def test_every_method_has_a_config_and_dino_brings_its_views():
    methods = {p.stem for p in (CONFIG_DIR / "method").glob("*.yaml")}
    assert methods == {"mae", "simclr", "mocov3", "byol", "dino", "barlow", "vicreg", "distill"}
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        assert compose("pretrain", overrides=["method=dino"]).augment.n_local == 4
        assert compose("pretrain", overrides=["method=simclr"]).augment.n_local == 0
        # the command line still wins over the method's choice
        assert compose("pretrain", overrides=["method=dino", "augment=default"]).augment.n_local == 0
