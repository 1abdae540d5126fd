"""Config composition: every option of every pre-training config group composes, passes the strict key
checks and instantiates (lightning-hydra-template style)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cropssl.config import CONFIG_DIR, check_config
from cropssl.schema import DW_MISSING, NUM_BANDS, Batch

GROUPS = [
    "augment",
    "callbacks",
    "data",
    "encoder",
    "experiment",
    "hparams_search",
    "location",
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


def test_simclr_brings_the_windowed_views_and_they_differ_from_the_default_only_in_the_window():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        simclr, byol, off = (
            compose("pretrain", overrides=o)
            for o in (["method=simclr"], ["method=byol"], ["method=simclr", "augment=default"])
        )
    views = [OmegaConf.to_container(c.method.views, resolve=True) for c in (simclr, byol, off)]
    window = [v["global_transform"]["transforms"]["window"] for v in views]
    assert window[0]["_target_"] == "cropssl.views.RandomTemporalWindow"
    assert [w["p"] for w in window] == [0.5, 0.0, 0.0]  # the command line still wins
    window[0]["p"] = 0.0
    assert views[0] == views[2]  # windowed.yaml is default.yaml but for the window's probability
    names = list(views[2]["global_transform"]["transforms"])
    assert names == list(views[1]["global_transform"]["transforms"])  # ... and in default's order
    # the composed views really window: a window shorter than T pads its view with missing steps, so
    # about half x 4/5 of the SimCLR views of a dense 12-month batch end with a missing step; without it
    # almost none (timestep dropout leaves the always-present time band)
    B, T = 512, 12
    dense = Batch(
        x=torch.randn(B, T, NUM_BANDS) * 0.1,
        mask=torch.zeros(B, T, NUM_BANDS, dtype=torch.bool),
        month=torch.arange(T).repeat(B, 1),
        latlon=torch.zeros(B, 2),
        dynamic_world=torch.full((B, T), DW_MISSING),
        label=torch.full((B,), -1),
    )
    ended = [
        [
            float(v.mask[:, -1].all(-1).float().mean())
            for v in instantiate(c.method.views)(dense, torch.Generator().manual_seed(1))
        ]
        for c in (simclr, off)
    ]
    assert all(0.3 < f < 0.55 for f in ended[0]) and all(f < 0.05 for f in ended[1]), ended


def test_a_view_transform_is_changed_or_left_out_by_name_on_the_command_line():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "pretrain",
            overrides=[
                "method=byol",
                "augment.global_transform.transforms.noise=null",
                "augment.global_transform.transforms.latlon_jitter.std_deg=3.0",
            ],
        )
    views = instantiate(cfg.method.views).global_transform
    assert "noise" not in views.names and len(views) == 8
    assert views.names[-2] == "latlon_jitter" and views["latlon_jitter"].std_deg == 3.0
    # dino's global views are default's, with its own local ones
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        dino, default = (compose("pretrain", overrides=[f"augment={a}"]).augment for a in ("dino", "default"))
    assert dino.global_transform == default.global_transform and dino.n_local == 4


def test_the_joint_embedding_families_leave_the_latlon_token_out_and_the_command_line_wins():
    """configs/location/: BYOL, MoCo v3, DINO, Barlow Twins and VICReg select an encoder without the lat/lon
    token (their views share the location exactly), whatever the encoder size; the others keep it;
    ``location=`` and ``encoder.use_latlon=`` on the command line win over a method's choice."""
    expected = {"mae": True, "simclr": True, "distill": True}
    expected |= dict.fromkeys(["byol", "mocov3", "dino", "barlow", "vicreg"], False)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for method, token in expected.items():
            for enc in ("presto", "small"):
                cfg = compose("pretrain", overrides=[f"method={method}", f"encoder={enc}"])
                assert cfg.encoder.use_latlon is token, (method, enc)
                assert (instantiate(cfg.encoder).latlon_embed is not None) is token
        for override in ("location=token", "encoder.use_latlon=true"):
            assert compose("pretrain", overrides=["method=byol", override]).encoder.use_latlon is True
        assert compose("pretrain", overrides=["method=mae", "location=no_token"]).encoder.use_latlon is False
