"""Robustness transforms change only what they say; a SAR-only model does not care about lost S2."""

from __future__ import annotations

import numpy as np
import pytest

from cropssl.evaluation.report import evaluate
from cropssl.evaluation.robustness import NDVI, S1, S2, mask_bands, s2_radiometry, seasonal_clouds, transforms
from cropssl.schema import BAND_INDEX
from tests.conftest import REAL_FILES, require_shared
from tests.evaluation._evalhelpers import export_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _unchanged_except(a, b, bands):
    others = [i for i in range(17) if i not in bands]
    np.testing.assert_array_equal(a.mask[..., others], b.mask[..., others])
    np.testing.assert_array_equal(a.x[..., others], b.x[..., others])


def test_transforms_mask_only_what_they_say_and_never_invent_data(east_africa):
    s = east_africa
    no_s2 = mask_bands(s, [*S2, NDVI])
    assert no_s2.mask[..., [*S2, NDVI]].all() and (no_s2.x[..., [*S2, NDVI]] == 0).all()
    _unchanged_except(no_s2, s, [*S2, NDVI])
    assert not s.mask[..., S2].all()  # the input is untouched
    no_s1 = transforms({})["no_s1"](s)
    assert no_s1.mask[..., S1].all()
    _unchanged_except(no_s1, s, S1)
    for rate in (0.25, 0.75):
        c = seasonal_clouds(s, rate, seed=1)
        assert (c.mask >= s.mask).all()  # masks only grow: nothing is un-masked or invented
        _unchanged_except(c, s, [*S2, NDVI])
        newly = (c.mask[..., BAND_INDEX["B4"]] & ~s.mask[..., BAND_INDEX["B4"]]).sum()
        assert newly / (~s.mask[..., BAND_INDEX["B4"]]).sum() == pytest.approx(rate, abs=0.08)
        winter, summer = np.isin(s.month, [11, 0, 1]), np.isin(s.month, [5, 6, 7])
        hit = c.mask[..., BAND_INDEX["B4"]] & ~s.mask[..., BAND_INDEX["B4"]]
        assert hit[winter].mean() > hit[summer].mean()
    r = s2_radiometry(s, gain=1.1, offset=-100)
    np.testing.assert_array_equal(r.mask[..., S2], s.mask[..., S2])
    present = ~s.mask[..., S2]
    np.testing.assert_allclose(
        r.x[..., S2][present], np.maximum(s.x[..., S2][present] * 1.1 - 100, 0), rtol=1e-6
    )
    b8, b4 = r.x[..., BAND_INDEX["B8"]], r.x[..., BAND_INDEX["B4"]]
    ok = ~r.mask[..., NDVI]
    np.testing.assert_allclose(r.x[..., NDVI][ok], ((b8 - b4) / (b8 + b4))[ok], rtol=1e-5)
    _unchanged_except(r, s, [*S2, NDVI])


def test_a_sar_only_model_ignores_lost_s2_and_an_s2_model_drops(tmp_path):
    require_shared(REAL_FILES["long"])
    sar = export_tiny(tmp_path / "sar-only", seed=0, groups=["S1", "ERA5", "SRTM"])
    doc = evaluate(
        [str(sar)], [REAL_FILES["long"]], tmp_path / "ev", legend="LANDCOVER10", min_count=15,
        strategies=["logreg"], baselines=["catboost_features"], probes={"catboost": {"iterations": 60}},
        n_boot=50, efficiency={"repeats": 1, "batch_size": 32}, threads=1,
        robustness={"cloud_rates": [0.5], "s2_gain": 1.2, "s2_offset": -200},
    )  # fmt: skip
    rob = doc["robustness"]
    assert rob["transforms"] == ["no_s2", "no_s1", "clouds_50", "s2_radiometry", "no_meteo"]
    sar_res, cb = rob["results"]["sar-only + logreg"], rob["results"]["catboost_features"]
    for t in ("no_s2", "clouds_50", "s2_radiometry"):
        assert sar_res[t]["drop"] == 0.0, t  # its embeddings do not read S2
    assert cb["no_s2"]["drop"] > 0.05  # the NDVI-phenology baseline relies on S2
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "Robustness to what the field throws" in md and (tmp_path / "ev" / "robustness.png").exists()
