"""Real files in the encodings users have: CF-encoded cubes, openEO / Presto names, 2-D static layers,
longer cubes with a chosen window, dekadal long files, older wide layouts -- all built in ``tmp_path`` from
the shared real files, each checked against the original file's values (an independent reference), and
the missing mask checked to be True wherever the input holds no data, for every no-data form."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cropssl.data.build import shard_files
from cropssl.data.ingest import IngestOptions, InputFormatError, read_input
from cropssl.data.ingest.labels import NoLabelsWarning
from cropssl.data.ingest.netcdf import decode_cf
from cropssl.schema import BAND_ALIASES, BAND_INDEX, S2_BANDS
from tests.conftest import REAL_FILES, require_shared

CUBE, LONG, WIDE = REAL_FILES["cube"], REAL_FILES["long"], REAL_FILES["wide"]
#: WorldCereal variable name of every band in the cube (NDVI excluded).
WC = {b: names[0] for b, names in BAND_ALIASES.items()}


def _cube_uint16(y: slice = slice(30, 50), x: slice = slice(10, 30)) -> xr.Dataset:
    """A crop of the real cube with the bands as the uint16 values they are (decoded once, by xarray)."""
    require_shared(CUBE)
    with xr.open_dataset(CUBE, engine="h5netcdf") as ds:
        out = ds.isel(y=y, x=x).load()
    for v in out.data_vars:
        if v != "crs":
            out[v] = out[v].astype(np.uint16)
            out[v].attrs = {k: a for k, a in out[v].attrs.items() if k != "_Unsigned"}
            out[v].encoding = {}
    return out


def _write(ds: xr.Dataset, path, encoding: dict | None = None):
    ds.to_netcdf(path, engine="h5netcdf", encoding=encoding or {})
    return path


def _as_int16_unsigned(ds: xr.Dataset, fill: bool = True) -> dict:
    """Encoding of every band as openEO writes it: int16 + _Unsigned (+ _FillValue 65535)."""
    enc = {}
    for v in ds.data_vars:
        if v != "crs":
            enc[v] = {"dtype": "int16", "_Unsigned": "true"}
            if fill:
                enc[v]["_FillValue"] = np.int16(-1)
    return enc


def _assert_same(a, b, atol=1e-4):
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.x, b.x, atol=atol, rtol=1e-6)
    np.testing.assert_array_equal(a.month, b.month)


# ---------------------------------------------------------------------------------------------- CF decoding
def test_decode_cf_matches_xarray(tmp_path):
    """Our decoder against xarray's CF decoding (mask_and_scale=True) on encodings written by xarray."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 65535, (4, 50)).astype(np.uint16)
    raw[0, :5] = 65535
    raw[1, :3] = 0
    ds = xr.Dataset(
        {
            "a": (("t", "x"), raw),
            "b": (("t", "x"), raw.astype(np.float64) * 0.5 + 10),
            "c": (("t", "x"), np.where(raw > 60000, np.nan, raw.astype(np.float32))),
        }
    )
    enc = {
        "a": {"dtype": "int16", "_Unsigned": "true", "_FillValue": np.int16(-1)},
        "b": {"dtype": "uint16", "scale_factor": 0.5, "add_offset": 10.0, "_FillValue": np.uint16(0)},
        "c": {"dtype": "float32", "_FillValue": np.float32(-9999.0)},
    }
    path = _write(ds, tmp_path / "cf.nc", enc)
    with (
        xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False) as stored,
        xr.open_dataset(path, engine="h5netcdf") as ref,
    ):
        for v in ("a", "b", "c"):
            values, nodata = decode_cf(stored[v].to_numpy(), stored[v].attrs)
            expected = ref[v].to_numpy().astype(np.float64)
            np.testing.assert_array_equal(nodata, np.isnan(expected))
            assert nodata.any()
            np.testing.assert_allclose(values[~nodata], expected[~nodata], rtol=1e-6)
    # valid_range marks values outside as no-data (CF)
    values, nodata = decode_cf(np.array([1, 5, 9], np.int16), {"valid_range": np.array([2, 8], np.int16)})
    np.testing.assert_array_equal(nodata, [True, False, True])


# ---------------------------------------------------------------------------------------------- cubes
def test_cube_int16_unsigned_fill_reads_like_uint16_and_masks_nodata(tmp_path):
    ds = _cube_uint16()
    ref, _ = read_input(_write(ds, tmp_path / "u16.nc"), 12)
    # openEO / GFMAP: int16 + _Unsigned + _FillValue (65535 stored as -1)
    s, report = read_input(_write(ds, tmp_path / "i16.nc", _as_int16_unsigned(ds)), 12)
    _assert_same(s, ref, atol=0)
    assert not (s.x[..., [BAND_INDEX[b] for b in S2_BANDS]] < 0).any()
    # the mask is True wherever the input holds no data, for every band (2 cloudy months in this cube)
    n = s.x.shape[0]
    for band, var in WC.items():
        if var not in ds:
            assert s.mask[..., BAND_INDEX[band]].all()
            continue
        nodata = ds[var].transpose("t", "y", "x").to_numpy().reshape(12, n).T == 65535
        if band in ("elevation", "slope"):
            continue  # static: one value per pixel, the first valid one
        assert s.mask[..., BAND_INDEX[band]][nodata].all()
        assert not s.mask[..., BAND_INDEX[band]][~nodata].any()
    assert s.mask[..., BAND_INDEX["B2"]].sum() >= 2 * n
    assert report.window["start"] == "2020-11" and report.window["end"] == "2021-10"


def test_cube_int16_without_unsigned_is_refused_naming_the_fix(tmp_path):
    ds = _cube_uint16()
    path = _write(
        ds,
        tmp_path / "bad.nc",
        _as_int16_unsigned(ds, fill=False) | {v: {"dtype": "int16"} for v in ds.data_vars if v != "crs"},
    )
    with pytest.raises(InputFormatError, match="negative reflectance.*_Unsigned"):
        read_input(path, 12)
    # --out-of-range mask masks them (and the report counts them)
    s, report = read_input(path, options=IngestOptions(on_out_of_range="mask"))
    assert report.n_out_of_range["B2"] > 0 and not (s.x[..., BAND_INDEX["B2"]] < 0).any()


def test_cube_nan_fill_and_scale_offset_are_masked_and_decoded(tmp_path):
    ds = _cube_uint16()
    ref, _ = read_input(_write(ds, tmp_path / "u16.nc"), 12)
    f = ds.copy()
    for b in S2_BANDS:  # reflectance as a float fraction with NaN for no-data, units "1"
        if WC[b] in f:
            v = f[WC[b]].astype(np.float64)
            f[WC[b]] = xr.where(v == 65535, np.nan, v / 1e4).astype(np.float32)
            f[WC[b]].attrs = {"units": "1"}
    # temperature with scale_factor / add_offset in K
    t = f["AGERA5-TMEAN"].astype(np.float64) / 100
    f["AGERA5-TMEAN"] = t
    f["AGERA5-TMEAN"].attrs = {"units": "K"}
    enc = {
        "AGERA5-TMEAN": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32768}
    }
    s, report = read_input(_write(f, tmp_path / "float.nc", enc), 12)
    assert report.units["B2"] == "fraction" and report.units["temperature_2m"] == "k"
    assert report.n_nonfinite_values == 0  # NaN was the declared fill value: no-data, not garbage
    _assert_same(s, ref, atol=0.06)
    # undeclared fractions are refused rather than read as reflectance x 1e4
    for b in S2_BANDS:
        if WC[b] in f:
            f[WC[b]].attrs = {}
    with pytest.raises(InputFormatError, match="reflectance fractions"):
        read_input(_write(f, tmp_path / "frac.nc"), 12)


def test_cube_presto_openeo_names_2d_static_any_dim_order(tmp_path):
    ds = _cube_uint16()
    ref, _ = read_input(_write(ds, tmp_path / "u16.nc"), 12)
    presto = {WC[b]: b for b in WC if WC[b] in ds}  # B2, VV, temperature_2m, elevation, ...
    presto["S2-L2A-B02"] = "B02"  # openEO spelling for one band
    p = ds.rename(presto).rename({"t": "time"})
    for static in ("elevation", "slope"):
        p[static] = p[static].isel(time=0, drop=True)  # 2-D (y, x)
    p = p.transpose("x", "time", "y")
    s, report = read_input(_write(p, tmp_path / "presto.nc", _as_int16_unsigned(p)), 12)
    _assert_same(s, ref, atol=0)
    assert report.variables["B2"] == "B02" and report.variables["VV"] == "VV"
    # S1 in dB declared by its units attribute (as Presto pipelines store it)
    db = p.copy()
    for b in ("VV", "VH"):
        v = db[b].astype(np.float64)
        db[b] = xr.where(v == 65535, np.nan, 20 * np.log10(v) - 83).astype(np.float32)
        db[b].attrs = {"units": "dB", "_FillValue": np.float32(np.nan)}
    s2, _ = read_input(_write(db, tmp_path / "db.nc"), 12)
    _assert_same(s2, ref, atol=1e-3)
    # the same dB values without units are refused with the fix named
    for b in ("VV", "VH"):
        db[b].attrs = {}
    with pytest.raises(InputFormatError, match="look like dB.*units='dB'"):
        read_input(_write(db, tmp_path / "db_nounits.nc"), 12)
    # and --units overrides the file
    s3, _ = read_input(tmp_path / "db_nounits.nc", options=IngestOptions(units={"VV": "dB", "VH": "dB"}))
    _assert_same(s3, ref, atol=1e-3)


def test_cube_band_named_twice_and_bad_dims_are_refused(tmp_path):
    ds = _cube_uint16()
    twice = ds.assign(B02=ds["S2-L2A-B02"])
    with pytest.raises(InputFormatError, match="both band B2"):
        read_input(_write(twice, tmp_path / "twice.nc"), 12)
    flat = xr.Dataset({"S2-L2A-B02": (("band", "pixel"), np.ones((2, 3), np.uint16))})
    with pytest.raises(InputFormatError, match="needs a time dimension"):
        read_input(_write(flat, tmp_path / "flat.nc"), 12)


def _long_cube(tmp_path) -> tuple:
    """The crop extended to 20 monthly steps (2020-11 .. 2022-06): months 12..19 repeat months 0..7."""
    ds = _cube_uint16()
    extra = ds.isel(t=slice(0, 8)).assign_coords(t=pd.date_range("2021-11-01", periods=8, freq="MS"))
    long = xr.concat([ds, extra], dim="t", data_vars="minimal", coords="minimal", compat="override")
    long["crs"] = ds["crs"]
    return ds, _write(long, tmp_path / "cube20.nc", _as_int16_unsigned(long))


def test_cube_window_is_chosen_and_recorded(tmp_path):
    ds, path = _long_cube(tmp_path)
    s, report = read_input(path, 12)  # default: the middle 12 of 20 months
    assert report.window["start"] == "2021-03" and report.window["end"] == "2022-02"
    assert any("the cube has 20 steps" in n for n in report.notes)
    s, report = read_input(path, options=IngestOptions(start="2020-11", end="2021-10"))
    ref, _ = read_input(_write(ds, tmp_path / "u16.nc"), 12)
    _assert_same(s, ref, atol=0)
    assert report.window["start"] == "2020-11" and "fixed window" in report.window["rule"]
    s, report = read_input(path, options=IngestOptions(timesteps=12, season_end_month=4))
    assert report.window["end"] == "2022-04" and (s.month[:, -1] == 3).all()
    with pytest.raises(InputFormatError, match="outside the file's time range 2020-11 .. 2022-06"):
        read_input(path, options=IngestOptions(start="2022-01", end="2022-12"))
    # the chosen window goes into the manifest
    manifest = shard_files([path], tmp_path / "shards", options=IngestOptions(start="2021-01", end="2021-12"))
    assert manifest["ingest_reports"][0]["window"]["start"] == "2021-01"
    on_disk = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert on_disk["ingest_reports"][0]["window"]["end"] == "2021-12" and on_disk["cadence"] == "month"


# ---------------------------------------------------------------------------------------------- long, dekadal
def _dekadal(df: pd.DataFrame) -> pd.DataFrame:
    """Three rows per (sample, month) whose monthly aggregate is the original row, as designed:

    S2 as r - 1, r, r + 1 (mean r); S1 DN as 0.5 d, d, sqrt(1.75) d (mean of the squares d^2: the linear
    power of d, while the mean DN or dB differ); precipitation split in thirds (sum p); the rest copied."""
    rows = []
    s2 = [c for c in df.columns if c.startswith("S2-L2A-")]
    for k, day in enumerate((1, 11, 21)):
        d = df.copy()
        d["timestamp"] = d["timestamp"] + pd.Timedelta(days=day - 1)
        for c in s2:
            ok = d[c] != 65535
            d[c] = np.where(ok & (d[c] > 0), d[c].astype(np.int64) + (k - 1), d[c]).astype(np.uint16)
        for c in ("S1-SIGMA0-VV", "S1-SIGMA0-VH"):
            factor = (0.5, 1.0, np.sqrt(1.75))[k]
            d[c] = np.where(d[c] != 65535, d[c].astype(np.float64) * factor, 65535.0)
        p = df["AGERA5-PRECIP"].astype(np.int64)
        d["AGERA5-PRECIP"] = (p // 3 if k < 2 else p - 2 * (p // 3)).astype(np.uint16)
        rows.append(d)
    return pd.concat(rows).sort_values(["sample_id", "timestamp"]).reset_index(drop=True)


def test_dekadal_long_aggregates_to_the_monthly_file(tmp_path):
    require_shared(LONG)
    df = pd.read_parquet(LONG)
    df = df[df["sample_id"].isin(sorted(df["sample_id"].unique())[:60])]
    df.to_parquet(tmp_path / "month.parquet")
    ref, _ = read_input(tmp_path / "month.parquet", 12)
    dek = _dekadal(df)
    dek.to_parquet(tmp_path / "dekad.parquet")
    s, report = read_input(tmp_path / "dekad.parquet", 12)
    assert any("aggregated to 17 months" in n and "linear power" in n for n in report.notes)
    np.testing.assert_array_equal(s.mask, ref.mask)
    s1 = [BAND_INDEX["VV"], BAND_INDEX["VH"]]
    np.testing.assert_allclose(s.x[..., s1], ref.x[..., s1], atol=0.01)  # dB, DN rounding only
    other = [i for i in range(17) if i not in s1]
    np.testing.assert_allclose(s.x[..., other], ref.x[..., other], rtol=1e-5, atol=1e-6)
    # a mean in dB or DN would be off by ~0.5 dB: the test can tell linear power from them
    dn = np.array([0.5, 1.0, np.sqrt(1.75)]) * 3000
    assert abs(20 * np.log10(dn.mean()) - 10 * np.log10((dn**2).mean())) > 0.4

    # native cadence keeps the dekads: 3 steps per month, each step's month recorded
    nat, report = read_input(
        tmp_path / "dekad.parquet", options=IngestOptions(timesteps=12, cadence="native")
    )
    assert report.cadence == "dekad" and nat.timesteps == 36
    np.testing.assert_array_equal(nat.month[:, ::3], ref.month)
    np.testing.assert_array_equal(nat.month[:, 1::3], ref.month)
    b2 = BAND_INDEX["B2"]
    ok = ~ref.mask[..., b2] & (ref.x[..., b2] > 0)
    np.testing.assert_allclose(nat.x[..., 2::3, b2][ok], ref.x[..., b2][ok] + 1)  # the third dekad: r + 1
    with pytest.raises(InputFormatError, match="max_T=72"):
        read_input(tmp_path / "dekad.parquet", options=IngestOptions(timesteps=30, cadence="native"))


def test_long_absent_rows_nan_and_nodata_are_masked(tmp_path):
    require_shared(LONG)
    df = pd.read_parquet(LONG)
    ids = sorted(df["sample_id"].unique())[:20]
    df = df[df["sample_id"].isin(ids)].copy()
    gone = (df["sample_id"] == ids[0]) & (df["timestamp"] == pd.Timestamp("2022-03-01"))
    df = df[~gone]  # an absent (sample, month) row
    df["S2-L2A-B04"] = df["S2-L2A-B04"].astype(float)
    nan_row = (df["sample_id"] == ids[1]) & (df["timestamp"] == pd.Timestamp("2022-04-01"))
    df.loc[nan_row, "S2-L2A-B04"] = np.nan
    df.to_parquet(tmp_path / "holes.parquet")
    s, report = read_input(tmp_path / "holes.parquet", 12)  # window 2021-12 .. 2022-11: March = step 3
    dynamic = [i for b, i in BAND_INDEX.items() if b not in ("elevation", "slope")]
    assert s.mask[0, 3, dynamic].all()
    assert s.mask[1, 4, BAND_INDEX["B4"]] and s.mask[1, 4, BAND_INDEX["NDVI"]]
    assert report.n_nonfinite_values == 1
    # 65535 in the file is no-data wherever it is
    raw = pd.read_parquet(tmp_path / "holes.parquet")
    for i, sid in enumerate(ids[:5]):
        rows = raw[raw["sample_id"] == sid].set_index("timestamp")
        for t, month in enumerate(pd.date_range("2021-12-01", periods=12, freq="MS")):
            if month in rows.index:
                assert s.mask[i, t, BAND_INDEX["B2"]] == (rows.loc[month, "S2-L2A-B02"] == 65535)


# ---------------------------------------------------------------------------------------------- wide
def test_wide_absent_columns_are_masked(tmp_path):
    require_shared(WIDE)
    df = pd.read_parquet(WIDE).head(30)
    df = df.drop(columns=["OPTICAL-B02-ts5-10m"])
    df.to_parquet(tmp_path / "w.parquet")
    s, _ = read_input(tmp_path / "w.parquet", 12)  # start_date 2016-12: the window is ts0 .. ts11
    assert s.mask[:, 5, BAND_INDEX["B2"]].all()
    assert not s.mask[:, 5, BAND_INDEX["B3"]].all()


def test_wide_older_layout_label_column_and_map(tmp_path):
    require_shared(WIDE)
    df = pd.read_parquet(WIDE).head(80)
    codes = sorted(df["ewoc_code"].unique())
    small = {int(c): i + 1 for i, c in enumerate(codes)}  # presto-worldcereal style integer labels
    old = df.drop(columns=["sample_id", "ewoc_code"]).assign(CROPTYPE_LABEL=df["ewoc_code"].map(small))
    old.to_parquet(tmp_path / "old.parquet")
    with pytest.warns(NoLabelsWarning, match="CROPTYPE_LABEL"):
        s, report = read_input(tmp_path / "old.parquet", 12)
    assert (s.label == -1).all()
    assert any("ids derived" in n for n in report.notes)
    # stable ids: the same rows in another order get the same ids
    (tmp_path / "rev").mkdir()
    old.iloc[::-1].to_parquet(tmp_path / "rev" / "old.parquet")
    with pytest.warns(NoLabelsWarning):
        s_rev, _ = read_input(tmp_path / "rev" / "old.parquet", 12)
    assert set(s_rev.meta["sample_id"]) == set(s.meta["sample_id"]) and len(set(s.meta["sample_id"])) == 80
    # label column + map back to ewoc codes (JSON and CSV)
    (tmp_path / "map.json").write_text(json.dumps({str(v): int(k) for k, v in small.items()}))
    opts = IngestOptions(label_column="CROPTYPE_LABEL", label_map=tmp_path / "map.json")
    s, report = read_input(tmp_path / "old.parquet", options=opts)
    np.testing.assert_array_equal(s.label, df["ewoc_code"].to_numpy())
    assert report.labels["n_labelled"] == 80
    # text labels need a map; a CSV map with a header works
    with pytest.raises(InputFormatError, match="text labels.*--label-map"):
        read_input(WIDE, options=IngestOptions(label_column="sampling_label"))
    names = sorted(df["sampling_label"].unique())
    pd.DataFrame({"name": names[1:], "code": range(1, len(names))}).to_csv(tmp_path / "m.csv", index=False)
    df.to_parquet(tmp_path / "new.parquet")
    opts = IngestOptions(label_column="sampling_label", label_map=tmp_path / "m.csv", unmapped="error")
    with pytest.raises(InputFormatError, match=f"does not cover 1 value.*{names[0]}"):
        read_input(tmp_path / "new.parquet", options=opts)
    s, report = read_input(
        tmp_path / "new.parquet",
        options=IngestOptions(label_column="sampling_label", label_map=tmp_path / "m.csv"),
    )
    first = (df["sampling_label"] == names[0]).to_numpy()
    assert (s.label[first] == -1).all() and (s.label[~first] > 0).all()
    assert report.labels["unmapped"] == {names[0]: int(first.sum())}
    with pytest.raises(InputFormatError, match='"other" entry'):
        read_input(
            tmp_path / "new.parquet",
            options=IngestOptions(
                label_column="sampling_label", label_map=tmp_path / "m.csv", unmapped="other"
            ),
        )
    with pytest.raises(InputFormatError, match="no label column 'CROP'"):
        read_input(tmp_path / "new.parquet", options=IngestOptions(label_column="CROP"))


def test_non_numeric_band_entries_are_counted_then_refused(tmp_path):
    require_shared(WIDE)
    df = pd.read_parquet(WIDE).head(50)
    df["OPTICAL-B03-ts2-10m"] = df["OPTICAL-B03-ts2-10m"].astype(str)
    df.loc[0, "OPTICAL-B03-ts2-10m"] = "cloud"
    df.to_parquet(tmp_path / "s.parquet")
    s, report = read_input(tmp_path / "s.parquet", options=IngestOptions(max_non_numeric=0.05))
    assert report.non_numeric == {"OPTICAL-B03-ts2-10m": 1} and report.n_nonfinite_values == 0
    assert s.mask[0, 2, BAND_INDEX["B3"]]
    with pytest.raises(InputFormatError, match="'OPTICAL-B03-ts2-10m' holds 1 non-numeric.*cloud"):
        read_input(tmp_path / "s.parquet", 12)  # 1 of 50 = 2 % > the default 1 %


# ---------------------------------------------------------------------------------------------- bad input
def test_out_of_range_values_are_refused_with_a_hint(tmp_path):
    ds = _cube_uint16()
    zero = ds.copy()
    zero["S1-SIGMA0-VV"] = zero["S1-SIGMA0-VV"].where(zero["x"] != zero["x"][0], 0).astype(np.uint16)
    with pytest.raises(InputFormatError, match="band VV: 240 of .*DN of 0"):
        read_input(_write(zero, tmp_path / "zero.nc"), 12)
    celsius = ds.copy()
    celsius["AGERA5-TMEAN"] = (celsius["AGERA5-TMEAN"].astype(np.float64) / 100 - 273.15).astype(np.float32)
    with pytest.raises(InputFormatError, match="degrees Celsius.*temperature_2m=degC"):
        read_input(_write(celsius, tmp_path / "c.nc"), 12)
    s, _ = read_input(tmp_path / "c.nc", options=IngestOptions(units={"temperature_2m": "degC"}))
    ref, _ = read_input(_write(ds, tmp_path / "u16.nc"), 12)
    np.testing.assert_allclose(
        s.x[..., BAND_INDEX["temperature_2m"]], ref.x[..., BAND_INDEX["temperature_2m"]], atol=1e-3
    )
    with pytest.raises(InputFormatError, match="unknown units 'furlongs'"):
        read_input(tmp_path / "c.nc", options=IngestOptions(units={"temperature_2m": "furlongs"}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cadence": "weekly"}, "unknown cadence 'weekly'"),
        ({"start": "2021-01"}, "both --start and --end"),
        ({"start": "2021-05", "end": "2021-01"}, "lies before"),
        ({"start": "21-01", "end": "2021-12"}, "expected YYYY-MM"),
        ({"season_end_month": 13}, "1-12"),
        ({"unmapped": "keep"}, "drop, other or error"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(InputFormatError, match=match):
        IngestOptions(**kwargs)


def test_cli_refusal_leaves_no_partial_output(tmp_path, capsys):
    from cropssl.cli.shard import main

    ds = _cube_uint16()
    good = _write(ds, tmp_path / "good.nc")
    bad = _write(ds, tmp_path / "bad.nc", {v: {"dtype": "int16"} for v in ds.data_vars if v != "crs"})
    out = tmp_path / "out"
    assert main([str(good), str(bad), "--out", str(out)]) == 2
    assert "bad.nc: band" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert main([str(tmp_path / "*.nc"), "--out", str(out), "--out-of-range", "mask"]) == 0
    assert "good.nc" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse names the valid choices
        main([str(tmp_path), "--out", str(tmp_path / "o2"), "--cadence", "daily"])
    assert "invalid choice: 'daily'" in capsys.readouterr().err
