"""The synthetic generator: realistic statistics, cloud model, determinism, learnability, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cropssl.cli.synth import main as synth_main
from cropssl.data.shards import load_manifest, read_shards
from cropssl.data.synth import CLASSES, REGIONS, generate, synth_to_shards
from cropssl.schema import BAND_GROUPS, BAND_INDEX, NUM_BANDS, S2_BANDS

CODE = {c.name: c.ewoc_code for c in CLASSES}
S2_IDX = [BAND_INDEX[b] for b in S2_BANDS]
NON_S2 = [i for g in ("S1", "ERA5", "SRTM") for i in BAND_GROUPS[g]]


@pytest.fixture(scope="module")
def big():
    return generate(12000, seed=3)


@pytest.fixture(scope="module")
def clean():
    """The physical model without the calibrated within-class variety (class signatures in the clear)."""
    return generate(12000, seed=3, variety=0.0)


def _nanmean(s, sel, band):
    v = np.where(s.mask[sel][..., BAND_INDEX[band]], np.nan, s.x[sel][..., BAND_INDEX[band]])
    return np.nanmean(v, 0)


def test_shapes_meta_and_labels(big):
    n, T = len(big), 12
    assert big.x.shape == (n, T, NUM_BANDS) and big.x.dtype == np.float32
    assert big.mask.dtype == bool and big.month.dtype == np.int8 and big.month.shape == (n, T)
    assert big.label.dtype == np.int64 and big.year.dtype == np.int16
    assert set(np.unique(big.label)) == {c.ewoc_code for c in CLASSES}
    assert set(np.unique(big.meta["country"])) == set(REGIONS)
    assert big.meta["sample_id"][5] == "synth_3_00000005"
    assert set(big.meta["source"]) == {"cropssl-synth"}
    for ref, region, year in zip(big.meta["ref_id"][:50], big.meta["country"][:50], big.year[:50]):
        assert ref == f"synth_{region}_{year}"
        assert region in REGIONS
    cells = big.meta["h3_l3_cell"]
    assert all(c.startswith(r) for c, r in zip(cells[:200], big.meta["country"][:200]))
    assert 20 < len(np.unique(cells)) < n / 10  # spatial blocks group many pixels
    # consecutive months, each region's window starts at its own agricultural-year start
    assert np.all((np.diff(big.month.astype(int), axis=1) % 12) == 1)
    for name, spec in REGIONS.items():
        assert np.all(big.month[big.meta["country"] == name, 0] == spec.start_month)
    # lat/lon inside the region boxes
    for name, spec in REGIONS.items():
        ll = big.latlon[big.meta["country"] == name]
        assert ll[:, 0].min() >= spec.lat[0] and ll[:, 0].max() <= spec.lat[1]
        assert ll[:, 1].min() >= spec.lon[0] and ll[:, 1].max() <= spec.lon[1]


def test_physical_ranges_and_ndvi_consistency(big):
    x, m = big.x, big.mask
    assert np.all(x[m] == 0)
    ranges = {
        "VV": (-35, 5),
        "VH": (-40, 0),
        "temperature_2m": (230, 330),
        "total_precipitation": (0, 0.6),
        "elevation": (-50, 6000),
        "slope": (0, 90),
        "NDVI": (-1, 1),
        **{b: (0, 10000) for b in S2_BANDS},
    }
    for band, (lo, hi) in ranges.items():
        v = x[..., BAND_INDEX[band]][~m[..., BAND_INDEX[band]]]
        assert v.size and lo <= v.min() and v.max() <= hi, band
    # typical values as in the real extractions
    vv = x[..., 0][~m[..., 0]]
    assert -16 < np.median(vv) < -8
    b8, b4 = x[..., BAND_INDEX["B8"]].astype(np.float64), x[..., BAND_INDEX["B4"]].astype(np.float64)
    obs = ~m[..., BAND_INDEX["NDVI"]]
    b8, b4 = b8[obs], b4[obs]
    np.testing.assert_allclose(x[..., BAND_INDEX["NDVI"]][obs], (b8 - b4) / (b8 + b4), atol=1e-6)
    assert np.array_equal(m[..., BAND_INDEX["NDVI"]], m[..., BAND_INDEX["B8"]] | m[..., BAND_INDEX["B4"]])
    # static bands are the same on every timestep
    for band in ("elevation", "slope"):
        v = x[..., BAND_INDEX[band]]
        assert np.all(v == v[:, :1])


def test_class_statistics_differ_in_expected_direction(clean):
    big = clean
    ne = big.meta["country"] == "north_europe"
    maize = _nanmean(big, ne & (big.label == CODE["maize"]), "NDVI")
    wheat = _nanmean(big, ne & (big.label == CODE["winter_cereal"]), "NDVI")
    assert np.argmax(maize) > np.argmax(wheat) + 1  # maize peaks later in the agricultural year
    assert maize.max() > 0.6 and wheat.max() > 0.6
    crops = np.isin(big.label, [CODE[c] for c in ("winter_cereal", "maize", "soybean", "spring_cereal")])
    water = big.label == CODE["water"]
    assert np.nanmean(_nanmean(big, water, "VV")) < np.nanmean(_nanmean(big, crops, "VV")) - 5
    forest, bare = big.label == CODE["forest"], big.label == CODE["bare_urban"]
    assert np.nanmean(_nanmean(big, forest, "VH")) > np.nanmean(_nanmean(big, bare, "VH")) + 2
    assert np.nanmean(_nanmean(big, water, "NDVI")) < 0 < np.nanmean(_nanmean(big, forest, "NDVI")) - 0.4
    # VH follows crop biomass: maize VH at its NDVI peak is well above the bare-soil months
    vh = _nanmean(big, ne & (big.label == CODE["maize"]), "VH")
    assert vh[np.argmax(maize)] > vh[np.argmin(maize)] + 4
    # the southern calendar: soybean peaks in Dec-Mar in south_america, Jul-Sep in the us_midwest
    for region, months in (("south_america", {11, 0, 1, 2}), ("us_midwest", {6, 7, 8})):
        sel = (big.meta["country"] == region) & (big.label == CODE["soybean"])
        peak = int(np.argmax(_nanmean(big, sel, "NDVI")))
        assert big.month[sel][0, peak] in months, region


def test_drought_year_lowers_ndvi_amplitude():
    s = generate(6000, seed=1, regions=["us_midwest"], years=[2021, 2022])
    maize = s.label == CODE["maize"]
    wet = _nanmean(s, maize & (s.year == 2021), "NDVI").max()
    dry = _nanmean(s, maize & (s.year == 2022), "NDVI").max()
    assert dry < wet - 0.08
    assert np.nanmean(_nanmean(s, s.year == 2022, "total_precipitation")) < np.nanmean(
        _nanmean(s, s.year == 2021, "total_precipitation")
    )


def test_clouds_mask_s2_only_and_follow_the_season(big):
    m = big.mask
    cloudy = m[..., BAND_INDEX["B2"]]
    assert 0.15 < cloudy.mean() < 0.6
    # a cloud masks all S2 bands and NDVI together
    for i in [*S2_IDX, BAND_INDEX["NDVI"]]:
        assert np.array_equal(m[..., i], cloudy)
    # ERA5 and SRTM are never missing; S1 gaps are rare and independent of clouds
    for g in ("ERA5", "SRTM"):
        assert not m[..., list(BAND_GROUPS[g])].any()
    s1 = m[..., BAND_INDEX["VV"]]
    assert np.array_equal(s1, m[..., BAND_INDEX["VH"]])
    assert s1.mean() < 0.05 and s1[cloudy].mean() < 0.05
    assert abs(s1[cloudy].mean() - s1[~cloudy].mean()) < 0.01
    # north Europe is cloudier in winter (Dec/Jan) than in summer (Jul/Aug)
    ne = big.meta["country"] == "north_europe"
    months, cl = big.month[ne], cloudy[ne]
    winter = cl[np.isin(months, [11, 0])].mean()
    summer = cl[np.isin(months, [6, 7])].mean()
    assert winter > summer + 0.2


def test_same_seed_same_output_different_seed_differs():
    a, b, c = generate(500, seed=7), generate(500, seed=7), generate(500, seed=8)
    for f in ("x", "mask", "month", "latlon", "label", "year"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert all(list(a.meta[k]) == list(b.meta[k]) for k in a.meta)
    assert not np.array_equal(a.x, c.x)
    assert a.meta["sample_id"][0] != c.meta["sample_id"][0]


def test_chunked_generation_is_consistent(monkeypatch):
    import cropssl.data.synth as synth

    monkeypatch.setattr(synth, "CHUNK", 100)
    s = synth.generate(350, seed=2, timesteps=7)
    assert len(s) == 350 and s.timesteps == 7
    assert len(np.unique(s.meta["sample_id"])) == 350
    assert not np.array_equal(s.x[:100], s.x[100:200])  # each chunk has its own random stream


def test_same_seed_gives_byte_identical_shards(tmp_path):
    kw = {"seed": 5, "samples_per_record": 64, "records_per_shard": 4}
    m1 = synth_to_shards(tmp_path / "a", 700, **kw)
    m2 = synth_to_shards(tmp_path / "b", 700, **kw)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len([f for f in files if f.endswith(".tar")]) == 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert m1 == m2 and m1["sources"] == ["cropssl-synth"] and m1["synth"]["seed"] == 5
    back = read_shards(tmp_path / "a")
    ref = generate(700, seed=5)
    assert np.array_equal(back.x, ref.x) and np.array_equal(back.label, ref.label)
    with pytest.raises(FileExistsError):
        synth_to_shards(tmp_path / "a", 10)


def _probe(X, y, train, test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # BLAS threads oversubscribe small machines and make lbfgs ~50x slower
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
        model.fit(X[train], y[train])
        return model.score(X[test], y[test])


def test_linear_probe_learnable_but_not_trivial_and_geographic_shift(big):
    X = np.where(big.mask, 0, big.x).reshape(len(big), -1)
    y, region = big.label, big.meta["country"]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(big))
    acc = _probe(X, y, perm[:9000], perm[9000:])
    n_classes = len(np.unique(y))
    assert 1.5 / n_classes < acc < 0.99
    # geographic split: hold out east_africa, keep only the classes it shares with the rest
    held = "east_africa"
    shared = np.isin(y, np.unique(y[region == held]))
    idx = np.flatnonzero(shared)
    test_geo, train_geo = idx[region[idx] == held], idx[region[idx] != held]
    acc_geo = _probe(X, y, train_geo, test_geo)
    # random split over the same pixels and classes, same test size
    rng.shuffle(idx)
    acc_rand = _probe(X, y, idx[len(test_geo) :], idx[: len(test_geo)])
    assert acc_geo < acc_rand - 0.1, (acc_geo, acc_rand)
    assert acc_geo > 1.0 / len(np.unique(y[shared]))  # still above chance


def test_drought_year_is_a_temporal_shift_in_the_physical_model(clean):
    """The 2022 drought year held out is harder than a random split of the same size (clean model: with the
    calibrated variety the within-class spread is as large as the drought's effect, as in real data)."""
    big = clean
    X = np.where(big.mask, 0, big.x).reshape(len(big), -1)
    y = big.label
    perm = np.random.default_rng(0).permutation(len(big))
    test_year, train_year = np.flatnonzero(big.year == 2022), np.flatnonzero(big.year != 2022)
    acc_year = _probe(X, y, train_year, test_year)
    acc_rand = _probe(X, y, perm[len(test_year) :], perm[: len(test_year)])
    assert acc_year < acc_rand - 0.03, (acc_year, acc_rand)


def test_calibrated_variety_overlaps_classes_like_the_real_files():
    """Fisher ratios (between-class / within-class variance of per-pixel VH mean and NDVI mean) of the
    default synthetic data lie near the real French and East-African files' (computed here from them), far
    from the clean model's."""
    from cropssl.data.ingest import read_input
    from tests.conftest import REAL_FILES, require_shared

    require_shared(REAL_FILES["long"], REAL_FILES["wide"])

    def fisher(s, band):
        v = np.nanmean(np.where(s.mask[..., BAND_INDEX[band]], np.nan, s.x[..., BAND_INDEX[band]]), 1)
        labs, counts = np.unique(s.label, return_counts=True)
        groups = [v[(s.label == c) & np.isfinite(v)] for c in labs[counts >= 20]]
        n = np.array([len(g) for g in groups])
        means = np.array([g.mean() for g in groups])
        between = np.average((means - np.average(means, weights=n)) ** 2, weights=n)
        return between / np.average([g.var() for g in groups], weights=n)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = [read_input(REAL_FILES[k], 12)[0] for k in ("long", "wide")]
        synth = generate(5000, seed=0, regions=["north_europe"])
        clean = generate(5000, seed=0, regions=["north_europe"], variety=0.0)
    for band in ("VH", "NDVI"):
        hi = max(fisher(s, band) for s in real)
        assert fisher(synth, band) < 2.5 * hi, band
        assert fisher(clean, band) > 5 * fisher(synth, band), band


def test_cli_writes_manifest(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["--out", str(out), "--pixels", "600", "--timesteps", "6", "--regions", "east_africa,us_midwest"]
    rc = synth_main([*args, "--years", "2020,2022", "--seed", "4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "600" in printed and "pixels/s" in printed
    m = load_manifest(out)
    assert m["num_samples"] == 600 and m["num_labelled"] == 600 and m["timesteps"] == 6
    assert sum(m["label_counts"].values()) == 600
    assert m["synth"]["regions"] == ["east_africa", "us_midwest"] and m["synth"]["years"] == [2020, 2022]
    assert json.loads((out / "manifest.json").read_text()) == m
    s = read_shards(out)
    assert set(s.meta["country"]) == {"east_africa", "us_midwest"} and set(s.year) == {2020, 2022}
    # existing directory: error without --overwrite, replaced with it
    assert synth_main(["--out", str(out), "--pixels", "10"]) == 2
    assert "exists" in capsys.readouterr().err
    assert synth_main(["--out", str(out), "--pixels", "10", "--overwrite"]) == 0
    assert load_manifest(out)["num_samples"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pixels", "0"], "--pixels"),
        (["--pixels", "-5"], "--pixels"),
        (["--pixels", "10", "--regions", "atlantis"], "valid regions: north_europe"),
        (["--pixels", "10", "--years", "twenty"], "--years"),
    ],
)
def test_cli_rejects_bad_input(tmp_path, capsys, args, message):
    assert synth_main(["--out", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid regions"):
        generate(10, regions=["nowhere"])
    with pytest.raises(ValueError):
        generate(0)
    with pytest.raises(ValueError):
        generate(10, timesteps=0)


def test_long_windows_repeat_the_season():
    s = generate(3000, seed=2, timesteps=24, regions=["us_midwest"], variety=0.0)
    ndvi = _nanmean(s, s.label == CODE["maize"], "NDVI")
    assert ndvi[:12].max() > 0.6 and ndvi[12:].max() > 0.6  # previous and current season
    assert abs(int(np.argmax(ndvi[12:])) - int(np.argmax(ndvi[:12]))) <= 1
