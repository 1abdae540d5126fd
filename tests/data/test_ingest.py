"""Ingest of the three real WorldCereal formats, checked against Presto's reference inputs and raw values."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from cropssl.cli.shard import main as shard_main
from cropssl.data.ingest import InputFormatError, detect_format, read_input
from cropssl.schema import BAND_INDEX, BANDS
from tests.conftest import PRESTO, REAL_FILES, require_shared


def test_long_matches_presto_reference_inputs():
    """The 48 reference pixels were cut from the French file by the official Presto pipeline."""
    require_shared(REAL_FILES["long"], PRESTO / "reference_embeddings.npz")
    ref = np.load(PRESTO / "reference_embeddings.npz")
    s, report = read_input(REAL_FILES["long"], 17)  # the whole 2021-09 .. 2023-01 series
    assert report.format == "long" and report.n_samples == 500 and report.missing_bands == ["B8A"]
    row = {sid: i for i, sid in enumerate(s.meta["sample_id"])}
    for j in range(48):
        i = row[str(ref["sample_id"][j])]
        start = (int(ref["start_month"][j]) - 8) % 12  # the series starts in September (month 8)
        assert start + 12 <= 17
        x, m = s.x[i, start : start + 12], s.mask[i, start : start + 12]
        np.testing.assert_array_equal(
            s.month[i, start : start + 12], (ref["start_month"][j] + np.arange(12)) % 12
        )
        observed = ref["mask"][j] == 0
        np.testing.assert_allclose(x[observed], ref["x_raw"][j][observed], rtol=1e-6, atol=1e-6)
        # the reference removed S1 (samples 8-15) and S2 timesteps (16-23) on purpose; elsewhere masks agree
        assert not (m & observed).any()
        if j < 8 or j >= 24:
            np.testing.assert_array_equal(m, ~observed)


def test_long_windows_are_centred_on_valid_time():
    require_shared(REAL_FILES["long"])
    s, _ = read_input(REAL_FILES["long"], 12)
    # valid_time is 2022-06-01 for every sample: June (5) sits at position T // 2
    assert (s.month[:, 6] == 5).all() and (s.month[:, 0] == 11).all()
    assert set(s.meta["country"]) == {"FRA"} and (s.year == 2022).all()
    assert (s.label > 0).all()


def test_wide_units_and_time_axis_from_raw_columns():
    require_shared(REAL_FILES["wide"])
    df = pd.read_parquet(REAL_FILES["wide"])
    s, report = read_input(REAL_FILES["wide"], 12)
    assert report.format == "wide" and len(s) == len(df) == 500
    i = 0
    r = df.iloc[i]
    assert s.meta["sample_id"][i] == r["sample_id"]
    # start_date 2016-12 -> ts0 is December (11); valid_position 6 centred in a 12-month window
    assert s.month[i, 0] == pd.Timestamp(r["start_date"]).month - 1
    for t in range(12):
        dn = r[f"SAR-VV-ts{t}-20m"]
        if dn == 65535:
            assert s.mask[i, t, BAND_INDEX["VV"]]
        else:
            assert s.x[i, t, BAND_INDEX["VV"]] == pytest.approx(20 * np.log10(dn) - 83, abs=1e-4)
        assert s.x[i, t, BAND_INDEX["temperature_2m"]] == pytest.approx(
            r[f"METEO-temperature_mean-ts{t}-100m"] / 100
        )
        prec = r[f"METEO-precipitation_flux-ts{t}-100m"] / 1e5
        assert s.x[i, t, BAND_INDEX["total_precipitation"]] == pytest.approx(prec, rel=1e-5)
        b8, b4 = r[f"OPTICAL-B08-ts{t}-10m"], r[f"OPTICAL-B04-ts{t}-10m"]
        if 65535 not in (b8, b4):
            assert s.x[i, t, BAND_INDEX["NDVI"]] == pytest.approx((b8 - b4) / (b8 + b4), abs=1e-6)
    assert (s.x[i, :, BAND_INDEX["elevation"]] == r["DEM-alt-20m"]).all()
    # every 65535 in the optical columns became a missing value
    n_nodata = sum(int((df[f"OPTICAL-B02-ts{t}-10m"] == 65535).sum()) for t in range(12))
    assert s.mask[..., BAND_INDEX["B2"]].sum() == n_nodata > 0
    assert {"UGA", "SSD"} <= set(s.meta["country"])


def test_cube_pixels_and_coordinates():
    require_shared(REAL_FILES["cube"])
    import xarray as xr

    s, report = read_input(REAL_FILES["cube"], 12)
    assert report.format == "cube" and len(s) == 10_000 and "B8A" in report.missing_bands
    assert (s.label == -1).all() and (s.month[:, 0] == 10).all()  # 2020-11 .. 2021-10
    with xr.open_dataset(REAL_FILES["cube"], engine="h5netcdf") as ds:
        raw = ds["S2-L2A-B04"].values  # (t, y, x)
    iy, ix = 37, 81
    k = iy * 100 + ix
    assert s.meta["sample_id"][k].endswith(f"_{iy:04d}_{ix:04d}")
    ok = raw[:, iy, ix] != 65535
    np.testing.assert_array_equal(s.x[k, ok, BAND_INDEX["B4"]], raw[ok, iy, ix])
    # Sentinel-2 tile 31UFS lies in eastern Belgium: about 50.4-51.4 N, 4.4-5.9 E
    assert 50.4 < s.latlon[:, 0].min() < s.latlon[:, 0].max() < 51.4
    assert 4.4 < s.latlon[:, 1].min() < s.latlon[:, 1].max() < 5.9
    # 10 m pixels: neighbours along x are ~10 m apart (~1.4e-4 degrees of longitude at 50.6 N)
    dlon = s.latlon[1, 1] - s.latlon[0, 1]
    assert 10 / (111_320 * np.cos(np.radians(50.6))) == pytest.approx(dlon, rel=0.02)


def test_nonfinite_and_short_series_are_masked(tmp_path):
    require_shared(REAL_FILES["wide"])
    df = pd.read_parquet(REAL_FILES["wide"]).head(20)
    df["OPTICAL-B02-ts3-10m"] = df["OPTICAL-B02-ts3-10m"].astype(float)
    df.loc[0, "OPTICAL-B02-ts3-10m"] = np.nan
    df.loc[1, "OPTICAL-B02-ts3-10m"] = np.inf
    path = tmp_path / "w.parquet"
    df.to_parquet(path)
    s, report = read_input(path, 24)  # longer than the 12 available months -> padded as missing
    assert report.n_nonfinite_values == 2
    assert s.mask[0, :, BAND_INDEX["B2"]].sum() >= 1 and np.isfinite(s.x).all()
    assert s.x.shape == (20, 24, len(BANDS)) and report.notes and "padded" in report.notes[0]
    assert s.mask[:, :, BAND_INDEX["B2"]].sum(1).min() >= 12
    # wide row with nothing observed at all is dropped and counted
    df2 = df.copy()
    for c in df2.columns:
        if "-ts" in c or c.startswith("DEM-"):
            df2.loc[2, c] = 65535
    df2.to_parquet(path)
    s2, report2 = read_input(path, 12)
    assert len(s2) == 19 and report2.n_skipped_all_missing == 1


def test_locations_outside_wgs84_degrees_are_refused_and_missing_ones_noted(tmp_path):
    require_shared(REAL_FILES["wide"], REAL_FILES["long"])
    df = pd.read_parquet(REAL_FILES["wide"]).head(20)
    path = tmp_path / "w.parquet"
    utm = df.copy()  # UTM zone 36N metres in the lat/lon columns
    utm["lat"], utm["lon"] = 372_000.0 + 10 * np.arange(20), 581_000.0
    utm.to_parquet(path)
    with pytest.raises(InputFormatError, match=r"w.parquet: 20 of 20 samples .* projected coordinates"):
        read_input(path, 12)
    swapped = df.copy()
    swapped["lat"], swapped["lon"] = 116.4, 39.9  # Beijing, the columns swapped
    swapped.to_parquet(path)
    with pytest.raises(InputFormatError, match="lat=116.4, lon=39.9.*swapped"):
        read_input(path, 12)
    lost = df.copy()
    lost.loc[[3, 7], "lat"] = np.nan
    lost.to_parquet(path)
    s, report = read_input(path, 12)
    assert len(s) == 20 and np.isnan(s.latlon[[3, 7], 0]).all() and np.isfinite(s.latlon[:3]).all()
    assert any("2 samples have no location" in n for n in report.notes)
    # the long layout: one sample's rows without coordinates
    long = pd.read_parquet(REAL_FILES["long"])
    first = long["sample_id"] == long["sample_id"].iloc[0]
    long.loc[first, "lon"] = np.nan
    path = tmp_path / "l.parquet"
    long.to_parquet(path)
    s, report = read_input(path, 12)
    assert int(np.isnan(s.latlon[:, 1]).sum()) == 1
    assert any("1 samples have no location" in n for n in report.notes)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", b"x,y\n1,2\n", "unsupported file type"),
        ("a.parquet", b"PAR1 this is not parquet", "not a readable parquet"),
        ("a.nc", b"\x89HDF\r\n\x1a\n truncated", "cannot open as a NetCDF4 cube"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputFormatError, match=match):
        read_input(p)


def test_unknown_parquet_layout_and_missing_file(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1], "b": [2]}).to_parquet(p)
    with pytest.raises(InputFormatError, match="neither long .* nor wide"):
        detect_format(p)
    pd.DataFrame({"timestamp": pd.to_datetime(["2021-01-01"]), "S2-L2A-B02": [1]}).to_parquet(p)
    with pytest.raises(InputFormatError, match="missing \\['sample_id', 'lat', 'lon'\\]"):
        read_input(p)
    with pytest.raises(FileNotFoundError, match="input file not found"):
        read_input(tmp_path / "nope.parquet")


def test_truncated_real_parquet(tmp_path):
    require_shared(REAL_FILES["long"])
    data = REAL_FILES["long"].read_bytes()
    p = tmp_path / "cut.geoparquet"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFormatError, match="truncated"):
        read_input(p)


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_cli_is_deterministic_and_reports_errors(tmp_path, capsys):
    require_shared(REAL_FILES["long"], REAL_FILES["wide"])
    inputs = [str(REAL_FILES["long"]), str(REAL_FILES["wide"])]
    assert shard_main([*inputs, "--out", str(tmp_path / "a"), "--samples-per-record", "64"]) == 0
    assert shard_main([*inputs, "--out", str(tmp_path / "b"), "--samples-per-record", "64"]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert "wrote 1000 samples (1000 labelled, T=12, cadence month)" in capsys.readouterr().out
    # existing output without --overwrite: clear error, exit code 2, the old shards stay intact
    before = _digest(tmp_path / "a")
    assert shard_main([*inputs, "--out", str(tmp_path / "a")]) == 2
    assert "exists" in capsys.readouterr().err and _digest(tmp_path / "a") == before
    bad = tmp_path / "bad.csv"
    bad.write_text("x")
    assert shard_main([str(bad), "--out", str(tmp_path / "c")]) == 2
    assert "unsupported file type" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "b")


def test_write_time_mixing_is_deterministic_and_every_batch_holds_every_source(tmp_path):
    """The bundled files (500 + 500 labelled pixels, 10,000 cube pixels) are shuffled across inputs at
    write time: the first epoch's batches (shuffle buffer off, shards in order) hold every source in about
    its share; the same seed gives the same bytes, another seed another order; the bucket scatter (memory
    bound) gives the same mixing."""
    require_shared(*REAL_FILES.values())
    from cropssl.data.build import shard_files
    from cropssl.data.datamodule import PixelStream

    inputs = [REAL_FILES["long"], REAL_FILES["wide"], REAL_FILES["cube"]]
    shard_files(inputs, tmp_path / "a", log=lambda _: None)
    shard_files(inputs, tmp_path / "b", log=lambda _: None)
    shard_files(inputs, tmp_path / "c", seed=1, log=lambda _: None)
    manifest = shard_files(inputs, tmp_path / "d", bucket_samples=2_000, log=lambda _: None)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert manifest["write_shuffle"]["buckets"] > 1 and len(manifest["shards"]) >= 32
    share = {
        "2022_FRA_LPIS_month.geoparquet": 500 / 11000,
        "2017_east_africa_public_month_wide.parquet": 500 / 11000,
    }
    for d in ("a", "d"):
        stream = PixelStream(tmp_path / d, batch_size=256, shuffle_buffer=0, shuffle_shards=False)
        for batch in stream:
            if len(batch) < 256:
                continue
            sources = np.asarray(batch.meta["source"])
            for name, p in share.items():
                k = int((sources == name).sum())
                assert p * 256 < 30
                # binomial(256, 0.045): mean 11.6, sd 3.3 -> every batch has some, none has more than 30
                assert 1 <= k <= 30, (d, name, k)
