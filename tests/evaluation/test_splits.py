from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cropssl.evaluation.split_files import load_split, save_split
from cropssl.evaluation.splits import (
    MissingClassWarning,
    Split,
    SplitLeakageError,
    check_leakage,
    group_split,
    random_split,
    spatial_blocks,
    temporal_split,
)
from cropssl.schema import PixelSamples
from tests.conftest import ROOT, make_samples


def _with_meta(samples: PixelSamples, **meta: np.ndarray) -> PixelSamples:
    samples.meta.update({k: np.asarray(v, dtype=object) for k, v in meta.items()})
    return samples


def test_random_split_stratified_disjoint_and_seeded() -> None:
    s = make_samples(200, seed=1)
    split = random_split(s, test_size=0.25, val_size=0.2, seed=3)
    assert sorted(split.sample_id.tolist()) == sorted(s.meta["sample_id"].tolist())
    for code in np.unique(s.label):
        n = int((s.label == code).sum())
        n_test = int(((s.label == code) & (split.fold == "test")).sum())
        assert n_test == int(np.floor(n * 0.25 + 0.5))  # per-class rounding
        n_val = int(((s.label == code) & (split.fold == "val")).sum())
        assert n_val == int(np.floor((n - n_test) * 0.2 + 0.5))  # val carved from train
    again = random_split(s, test_size=0.25, val_size=0.2, seed=3)
    np.testing.assert_array_equal(split.fold, again.fold)
    assert not np.array_equal(split.fold, random_split(s, test_size=0.25, val_size=0.2, seed=4).fold)


def test_empty_test_is_an_error() -> None:
    with pytest.raises(ValueError, match="test fold of the split is empty"):
        random_split(make_samples(20), test_size=0.0)


def test_leakage_check_fails_on_leaking_split_and_passes_on_correct_one() -> None:
    ids = np.array(["a", "b", "c", "d", "e", "f"])
    groups = np.array(["UGA", "UGA", "SSD", "SSD", "AF", "AF"])
    good = Split(ids, np.array(["train", "train", "val", "val", "test", "test"]))
    assert check_leakage(good, groups) == {"train": 1, "val": 1, "test": 1}
    bad = Split(ids, np.array(["train", "test", "train", "val", "test", "test"]))
    with pytest.raises(SplitLeakageError, match="UGA") as exc:
        check_leakage(bad, groups)
    assert exc.value.leaks == {"train/test": ["UGA"]}
    # train/val sharing SSD is allowed by default, refused when asked
    check_leakage(bad, np.array(["UGA", "X", "SSD", "SSD", "AF", "AF"]))
    with pytest.raises(SplitLeakageError, match="train/val"):
        check_leakage(
            bad, np.array(["UGA", "X", "SSD", "SSD", "AF", "AF"]), pairs=[("train", "test"), ("train", "val")]
        )


def test_group_split_by_meta_key_and_missing_class_warning() -> None:
    s = make_samples(60, seed=2)
    src = np.where(np.arange(60) < 20, "A", np.where(np.arange(60) < 40, "B", "C"))
    s = _with_meta(s, source=src)
    split = group_split(s, "source", ["C"], val_size=0.0)
    np.testing.assert_array_equal(split.fold == "test", src == "C")
    check_leakage(split, "source", samples=s)
    s.label[src == "C"] = 999  # a class only in the held-out group
    with pytest.warns(MissingClassWarning, match="999"):
        group_split(s, "source", ["C"], val_size=0.0)
    with pytest.raises(ValueError, match="available"):
        group_split(s, "source", ["Z"])


def test_spatial_blocks_hand_computed() -> None:
    # 100 km blocks: rows every 100/111.32 = 0.898 deg of latitude
    latlon = np.array([[0.1, 0.1], [0.5, 0.85], [0.95, 0.1], [0.1, 0.95], [-0.1, 0.1]])
    # row of lat 0.95: floor(0.95 * 111.32 / 100) = 1
    # lon 0.95 in row 0 (centre lat 0.45): 0.95 * 111.32 * cos(0.45 deg) = 105.7 km -> column 1
    assert spatial_blocks(latlon, 100).tolist() == ["0_0", "0_0", "1_0", "0_1", "-1_0"]
    with pytest.raises(ValueError):
        spatial_blocks(latlon, 0)
    latlon[2, 1] = np.nan  # a sample without a location is refused, not put in block "<garbage>_<garbage>"
    with pytest.raises(ValueError, match="1 of 5 samples have no location"):
        spatial_blocks(latlon, 100)


def test_group_split_val_grouped_spatial_blocks() -> None:
    s = make_samples(300, seed=3)  # lat 40-50, lon 0-10: ~100 blocks of 50 km
    split = group_split(s, "spatial_block", block_size_km=50, test_size=0.2, val_size=0.2, val_grouped=True)
    counts = split.counts()
    assert 0.1 < counts["test"] / len(s) < 0.3 and counts["val"] > 0
    check_leakage(
        split,
        "spatial_block",
        samples=s,
        block_size_km=50,
        pairs=[("train", "test"), ("val", "test"), ("train", "val")],
    )


def test_geographic_split_real_east_africa_holds_out_a_country(east_africa: PixelSamples) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingClassWarning)
        split = group_split(east_africa, "country", ["SSD"], val_size=0.1)
    country = dict(zip(east_africa.meta["sample_id"].tolist(), east_africa.meta["country"].tolist()))
    by_fold = {f: {country[i] for i in split.ids(f)} for f in ("train", "val", "test")}
    assert by_fold["test"] == {"SSD"}
    assert "SSD" not in by_fold["train"] | by_fold["val"]
    assert by_fold["train"] == {"UGA", "AF"}
    assert split.counts()["test"] == int((east_africa.meta["country"] == "SSD").sum())
    # random h3 cells held out: no cell on both sides
    split = group_split(east_africa, "h3_l3_cell", test_size=0.3, seed=1)
    check_leakage(split, "h3_l3_cell", samples=east_africa)


def test_temporal_split_real_two_years(east_africa: PixelSamples, france: PixelSamples) -> None:
    both = PixelSamples.concat([east_africa, france])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingClassWarning)
        split = temporal_split(both)  # latest year (2022) held out
        assert split.info["test_years"] == [2022]
        test = split.select(both, "test")
        assert set(test.year.tolist()) == {2022} and len(test) == len(france)
        assert set(split.select(both, "train").year.tolist()) == {2017}
        split = temporal_split(both, [2017], val_size=0.0)
    assert split.counts() == {"train": len(france), "val": 0, "test": len(east_africa)}


def test_temporal_split_needs_two_years() -> None:
    with pytest.raises(ValueError, match="2 known years"):
        temporal_split(make_samples(10))


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    s = make_samples(50, seed=4)
    split = random_split(s, seed=5)
    path = save_split(split, tmp_path / f"sub/split{suffix}")
    loaded = load_split(path)
    np.testing.assert_array_equal(loaded.sample_id, split.sample_id)
    np.testing.assert_array_equal(loaded.fold, split.fold)
    assert loaded.info == split.info
    # reusable on the same samples in another order
    perm = np.random.default_rng(0).permutation(len(s))
    shuffled = s.select(perm)
    test = loaded.select(shuffled, "test")
    assert set(test.meta["sample_id"].tolist()) == set(split.ids("test").tolist())
    with pytest.raises(KeyError, match="not in the samples"):
        loaded.select(s.select(np.arange(10)), "train")
    with pytest.raises(ValueError):
        save_split(split, tmp_path / "split.csv")


def test_split_rejects_duplicates_and_bad_folds() -> None:
    with pytest.raises(ValueError, match="unique"):
        Split(np.array(["a", "a"]), np.array(["train", "test"]))
    with pytest.raises(ValueError, match="unknown fold"):
        Split(np.array(["a", "b"]), np.array(["train", "holdout"]))


@pytest.mark.parametrize("name", ["random", "geographic", "temporal"])
def test_hydra_configs_instantiate(name: str) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "split" / f"{name}.yaml")
    build = instantiate(cfg)
    s = make_samples(120, seed=6)
    if name == "temporal":
        s.year[:40] = 2022
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingClassWarning)
        split = build(s)
    assert isinstance(split, Split) and len(split) == len(s)
    assert split.counts()["test"] > 0 and split.counts()["train"] > 0
    if name == "temporal":
        np.testing.assert_array_equal(split.fold == "test", s.year == 2022)
