from __future__ import annotations

import numpy as np
import pytest

from cropssl.evaluation.features import (
    compute_features,
    compute_features_arrays,
    feature_names,
    interpolate_missing,
    masked_percentiles,
    ndvi_phenology,
)
from cropssl.schema import BAND_INDEX, NUM_BANDS, PixelSamples
from tests.conftest import make_samples

NAN = np.nan
# NDVI curve of 8 months starting in April (month 3); t=2 is cloudy (missing).
CURVE = [0.2, 0.3, NAN, 0.7, 0.8, 0.5, 0.3, 0.25]


def _one_sample(curve: list[float], start_month: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T = len(curve)
    x = np.zeros((1, T, NUM_BANDS), np.float32)
    mask = np.zeros_like(x, dtype=bool)
    nd = np.asarray(curve, dtype=np.float64)
    miss = np.isnan(nd)
    b4 = np.full(T, 1000.0)
    b8 = b4 * (1 + nd) / (1 - nd)  # NDVI = (b8 - b4) / (b8 + b4)
    for band, v in (("B4", b4), ("B8", b8), ("NDVI", nd)):
        x[0, :, BAND_INDEX[band]] = np.where(miss, 0, v)
        mask[0, :, BAND_INDEX[band]] = miss
    x[0, :, BAND_INDEX["VV"]] = [-10, -12, -8, -14, -9, -11, -13, -15][:T]
    x[0, :, BAND_INDEX["elevation"]] = 250.0
    x[0, :, BAND_INDEX["slope"]] = 3.5
    month = ((start_month + np.arange(T)) % 12)[None].astype(np.int8)
    return x, mask, month


def test_hand_computed_percentiles_and_phenology() -> None:
    x, mask, month = _one_sample(CURVE)
    feats, names = compute_features_arrays(x, mask, month)
    f = dict(zip(names, feats[0].astype(np.float64)))
    assert len(names) == feats.shape[1] == len(set(names))
    # observed NDVI sorted: .2 .25 .3 .3 .5 .7 .8 (n=7, linear interpolation at (n-1)*q)
    assert f["NDVI_p10"] == pytest.approx(0.23, abs=1e-6)  # pos .6: .2 + .6 * .05
    assert f["NDVI_p50"] == pytest.approx(0.3, abs=1e-6)  # pos 3
    assert f["NDVI_p90"] == pytest.approx(0.74, abs=1e-6)  # pos 5.4: .7 + .4 * .1
    assert f["NDVI_iqr"] == pytest.approx(0.6 - 0.275, abs=1e-6)  # p75 pos 4.5, p25 pos 1.5
    # VV sorted: -15 -14 -13 -12 -11 -10 -9 -8 (n=8): p10 pos .7, p50 pos 3.5, p90 pos 6.3
    assert f["VV_p10"] == pytest.approx(-14.3)
    assert f["VV_p50"] == pytest.approx(-11.5)
    assert f["VV_p90"] == pytest.approx(-8.7)
    assert f["VV_iqr"] == pytest.approx(-9.75 - -13.25)  # p75 pos 5.25, p25 pos 1.75
    assert f["VH_p50"] == 0.0  # VH all 0 but present
    # gap-filled curve: .2 .3 [.5] .7 .8 .5 .3 .25 -> peak .8 at t=4 (month 3+4 = 7, August)
    assert f["ndvi_peak_value"] == pytest.approx(0.8, abs=1e-6)
    assert f["ndvi_peak_step"] == 4
    assert f["ndvi_peak_month"] == 7
    assert f["ndvi_min"] == pytest.approx(0.2, abs=1e-6)
    assert f["ndvi_amplitude"] == pytest.approx(0.6, abs=1e-6)
    assert f["ndvi_greenup_length"] == 4  # from the minimum .2 at t=0
    assert f["ndvi_greenup_slope"] == pytest.approx(0.6 / 4, abs=1e-6)
    assert f["ndvi_senescence_length"] == 3  # down to .25 at t=7
    assert f["ndvi_senescence_slope"] == pytest.approx(-0.55 / 3, abs=1e-6)
    # trapezoids: .25 + .4 + .6 + .75 + .65 + .4 + .275
    assert f["ndvi_auc"] == pytest.approx(3.325, abs=1e-5)
    assert f["ndvi_valid_fraction"] == pytest.approx(7 / 8)
    assert f["elevation"] == 250.0 and f["slope"] == 3.5


def test_phenology_edges_and_nan_when_not_computable() -> None:
    nd = np.array([[0.0, 0.4, 0.6, 0.0], [0.0, 0.0, 0.0, 0.0]])
    missing = np.array([[True, False, False, True], [True, True, True, True]])
    out = ndvi_phenology(nd, missing)
    # filled: .4 .4 .6 .6 -> peak .6 at t=2 (first max), green-up from the last .4 (t=1)
    np.testing.assert_allclose(interpolate_missing(nd, missing)[0], [0.4, 0.4, 0.6, 0.6])
    assert out[0, 1] == 2 and out[0, 6] == 1 and out[0, 5] == pytest.approx(0.2)
    assert out[0, 8] == 0 and np.isnan(out[0, 7])  # no senescence: slope not computable
    assert np.isnan(out[0, 2])  # no months given
    assert np.isnan(out[1, :-1]).all() and out[1, -1] == 0  # no NDVI at all


def test_interpolation_matches_np_interp() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 12))
    miss = rng.random((50, 12)) < 0.4
    miss[:, 3] = False  # at least one present value per row
    got = interpolate_missing(v, miss)
    t = np.arange(12)
    for i in range(50):
        np.testing.assert_allclose(got[i], np.interp(t, t[~miss[i]], v[i, ~miss[i]]))


def test_masked_percentiles_match_nanpercentile() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 12, 3))
    miss = rng.random(v.shape) < 0.5
    miss[0, :, 1] = True  # a series without any value -> NaN
    q = [10, 25, 50, 75, 90]
    got = masked_percentiles(v, miss, q)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.moveaxis(np.nanpercentile(np.where(miss, np.nan, v), q, axis=1), 0, -1)
    np.testing.assert_allclose(got, expected)
    assert np.isnan(got[0, 1]).all()


def test_compute_features_on_samples_and_missing_band(france: PixelSamples) -> None:
    feats, names = compute_features(france)
    assert feats.shape == (len(france), len(names)) and names == feature_names()
    assert feats.dtype == np.float32
    # B8A is entirely missing in the French file: its percentiles are NaN, other S2 bands are not
    assert np.isnan(feats[:, names.index("B8A_p50")]).all()
    assert np.isfinite(feats[:, names.index("B4_p50")]).mean() > 0.9
    assert np.isfinite(feats[:, names.index("elevation")]).all()


def test_feature_names_are_consistent() -> None:
    s = make_samples(5)
    feats, names = compute_features(s, bands=("NDVI", "VV"), percentiles=(50,))
    assert names[:4] == ["NDVI_p50", "VV_p50", "NDVI_iqr", "VV_iqr"]
    assert feats.shape == (5, len(names))
    with pytest.raises(KeyError):
        compute_features(s, bands=("B99",))
