"""cropssl-predict on a crop of the real Belgian NetCDF cube, with heads saved by a real evaluation run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from cropssl.cli.predict import main, resolve_head_encoder
from cropssl.data.ingest import read_input
from cropssl.evaluation.encoders import resolve_encoder
from cropssl.evaluation.heads import head_proba, load_head
from cropssl.evaluation.report import evaluate
from cropssl.schema import Batch
from tests.conftest import REAL_FILES, require_shared
from tests.evaluation._evalhelpers import export_tiny

CUBE = REAL_FILES["cube"]
FRA = REAL_FILES["long"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_cube(tmp_path_factory) -> Path:
    """A 13 x 9 (non-square) window of the real cube with its crs variable, written like the original."""
    require_shared(CUBE)
    out = tmp_path_factory.mktemp("cube") / "bel_small.nc"
    with xr.open_dataset(CUBE, engine="h5netcdf", decode_cf=False) as ds:
        ds.isel(y=slice(20, 33), x=slice(40, 49)).load().to_netcdf(out, engine="h5netcdf")
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A real evaluation on France LANDCOVER10 with a tiny exported encoder, heads saved."""
    require_shared(FRA)
    root = tmp_path_factory.mktemp("predict")
    enc = export_tiny(root / "tiny-enc", seed=0)
    torch.set_num_threads(1)
    doc = evaluate(
        [str(enc)],
        [FRA],
        root / "eval",
        legend="LANDCOVER10",
        min_count=15,
        strategies=["logreg", "finetune"],
        baselines=["catboost_features"],
        probes={"catboost": {"iterations": 20, "depth": 4}},
        finetune={"epochs": 2, "patience": 0},
        n_boot=50,
        efficiency={"repeats": 1, "batch_size": 32},
        threads=1,
        save_heads=True,
    )
    return {"encoder": enc, "eval": root / "eval", "doc": doc}


def _predict(run: dict, head: str, cube: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "--head",
            str(run["eval"] / run["doc"]["heads"][head]),
            str(cube),
            "--out",
            str(out),
            "--quiet",
            "--batch-size",
            "40",
            *extra,
        ]
    )


def test_map_has_input_shape_coordinates_and_crs(run, small_cube, tmp_path):
    out = tmp_path / "map.nc"
    assert _predict(run, "tiny-enc + logreg", small_cube, out, "--encoder", str(run["encoder"])) == 0
    classes = run["doc"]["labels"]["classes"]
    with xr.open_dataset(small_cube, engine="h5netcdf") as src, xr.open_dataset(out, engine="h5netcdf") as m:
        assert m["class"].dims == ("y", "x") and m["class"].shape == (13, 9)
        assert m["probability"].dims == ("class_index", "y", "x")
        assert m["probability"].shape == (len(classes), 13, 9)
        np.testing.assert_array_equal(m["x"].values, src["x"].values)
        np.testing.assert_array_equal(m["y"].values, src["y"].values)
        assert m["x"].attrs == src["x"].attrs
        assert m["crs"].attrs == src["crs"].attrs
        assert m["class"].attrs["grid_mapping"] == "crs"
        assert json.loads(m.attrs["class_names"]) == classes
        assert m["class_name"].values.tolist() == classes
        cls = m["class"].values
        assert cls.dtype == np.int16 and ((cls >= 0) & (cls < len(classes))).all()
        p = m["probability"].values
        np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
        np.testing.assert_array_equal(p.argmax(0), cls)
    assert out.with_suffix(".png").stat().st_size > 2000

    # independent reference: embed the cube's pixels with the exported encoder, apply the stored probe
    # (equal to the scikit-learn pipeline: tests/evaluation/test_heads.py)
    head = load_head(run["eval"] / run["doc"]["heads"]["tiny-enc + logreg"])
    samples = read_input(small_cube, 12)[0]
    enc = resolve_encoder(str(run["encoder"])).encoder
    with torch.inference_mode():
        emb = enc(Batch.from_samples(samples)).numpy().astype(np.float64)
    ref = head["classifier"].predict(emb).reshape(13, 9)
    np.testing.assert_array_equal(cls, ref)


def test_finetune_head_reproduces_the_evaluation_predictions(run, small_cube, tmp_path):
    """The fine-tuned head (encoder weights + linear layer) predicts the evaluation's test samples exactly
    as the evaluation did, and maps the cube without --encoder."""
    head = load_head(run["eval"] / run["doc"]["heads"]["tiny-enc + finetune"])
    assert head["strategy"] == "finetune" and head["encoder_state"] and head["linear"]["weight"].ndim == 2
    enc, desc = resolve_head_encoder(head, str(run["encoder"]))  # the original encoder is accepted
    assert "fine-tuned" in desc
    fra = read_input(FRA, 12)[0]
    preds = pd.read_parquet(run["eval"] / "predictions.parquet")
    idx = {s: i for i, s in enumerate(fra.meta["sample_id"].tolist())}
    test = fra.select(np.array([idx[s] for s in preds["sample_id"]]))
    got = np.asarray(head["classes"])[head_proba(head, enc, test).argmax(1)]
    np.testing.assert_array_equal(got, preds["tiny-enc + finetune"].to_numpy())
    assert _predict(run, "tiny-enc + finetune", small_cube, tmp_path / "ft.nc") == 0
    with xr.open_dataset(tmp_path / "ft.nc", engine="h5netcdf") as m:
        assert m["class"].shape == (13, 9)


def test_features_head_needs_no_encoder(run, small_cube, tmp_path):
    assert _predict(run, "catboost_features", small_cube, tmp_path / "cb.nc") == 0
    with xr.open_dataset(tmp_path / "cb.nc", engine="h5netcdf") as m:
        assert m.attrs["strategy"] == "catboost_features" and m["class"].shape == (13, 9)


def test_bad_inputs(run, small_cube, tmp_path, capsys):
    # a cube without B4: named, refused
    no_b4 = tmp_path / "no_b4.nc"
    with xr.open_dataset(small_cube, engine="h5netcdf", decode_cf=False) as ds:
        ds.drop_vars("S2-L2A-B04").load().to_netcdf(no_b4, engine="h5netcdf")
    assert _predict(run, "tiny-enc + logreg", no_b4, tmp_path / "a.nc") == 2
    err = capsys.readouterr().err
    assert "B4" in err and "S2-L2A-B04" in err and "'S2-L2A-B03'" in err  # the variables the file has
    assert _predict(run, "tiny-enc + logreg", no_b4, tmp_path / "a.nc", "--allow-missing-bands") == 0
    # another encoder than the head's
    other = export_tiny(tmp_path / "other-enc", seed=9)
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "b.nc", "--encoder", str(other)) == 2
    err = capsys.readouterr().err
    assert "tiny-enc" in err and "other-enc" in err
    # not a head / not a cube
    for name, message in (("junk.safetensors", "not a cropssl head"), ("junk.joblib", "--trust-pickle")):
        junk = tmp_path / name
        junk.write_bytes(b"not a head")
        assert main(["--head", str(junk), str(small_cube), "--out", str(tmp_path / "c.nc"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert _predict(run, "tiny-enc + logreg", FRA, tmp_path / "d.nc") == 2
    assert "not a NetCDF cube" in capsys.readouterr().err


def _presto_named_20_months(small_cube: Path, path: Path) -> None:
    """The crop as openEO / Presto pipelines write it: int16 + _Unsigned + _FillValue, Presto band names,
    2-D static layers, a `time` dimension, and 20 months (2020-11 .. 2022-06)."""
    from cropssl.schema import BAND_ALIASES

    with xr.open_dataset(small_cube, engine="h5netcdf") as ds:
        ds = ds.load()
    extra = ds.isel(t=slice(0, 8)).assign_coords(t=pd.date_range("2021-11-01", periods=8, freq="MS"))
    ds = xr.concat([ds, extra], dim="t", data_vars="minimal", coords="minimal", compat="override")
    ds = ds.rename({v: b for b, names in BAND_ALIASES.items() for v in names[:1] if v in ds}).rename(t="time")
    for static in ("elevation", "slope"):
        ds[static] = ds[static].isel(time=0, drop=True)
    enc = {}
    for v in ds.data_vars:
        if v != "crs":
            ds[v] = ds[v].astype(np.uint16)
            ds[v].attrs.pop("_Unsigned", None)
            enc[v] = {"dtype": "int16", "_Unsigned": "true", "_FillValue": np.int16(-1)}
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)


def test_openeo_cube_with_window_maps_like_the_original(run, small_cube, tmp_path):
    """Same reader as cropssl-shard: the renamed int16 cube, window 2020-11 .. 2021-10, gives the original
    map; the chosen window is in the map's attributes."""
    renamed = tmp_path / "openeo.nc"
    _presto_named_20_months(small_cube, renamed)
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "a.nc") == 0
    args = ("--start", "2020-11", "--end", "2021-10")
    assert _predict(run, "tiny-enc + logreg", renamed, tmp_path / "b.nc", *args) == 0
    with xr.open_dataset(tmp_path / "a.nc", engine="h5netcdf") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        np.testing.assert_array_equal(a["class"].values, b["class"].values)
        assert b.attrs["window_start"] == "2020-11" and b.attrs["window_end"] == "2021-10"
        assert "fixed window" in b.attrs["window_rule"] and a.attrs["window_start"] == "2020-11"
    assert _predict(run, "tiny-enc + logreg", renamed, tmp_path / "c.nc") == 0  # default: the middle months
    with xr.open_dataset(tmp_path / "c.nc", engine="h5netcdf") as c:
        assert c.attrs["window_start"] == "2021-03" and c.attrs["window_end"] == "2022-02"
    assert (
        _predict(
            run, "tiny-enc + logreg", renamed, tmp_path / "d.nc", "--start", "2021-01", "--end", "2021-06"
        )
        == 2
    )


def test_nodata_pixels_stay_nodata(run, small_cube, tmp_path, capsys):
    """A cube whose S1 and S2 are all no-data maps to no-data, never a confident class (with a warning);
    pixels with too few observed steps are no-data too."""
    empty = tmp_path / "empty.nc"
    with xr.open_dataset(small_cube, engine="h5netcdf", decode_cf=False) as ds:
        ds = ds.load()
    for v in ds.data_vars:
        if v.startswith(("S1-", "S2-")):
            ds[v].values[:] = -1  # int16 + _Unsigned: 65535, no-data
    ds.to_netcdf(empty, engine="h5netcdf")
    with pytest.warns(UserWarning, match="no-data in the map"):
        assert _predict(run, "tiny-enc + logreg", empty, tmp_path / "e.nc", "--allow-missing-bands") == 0
    with xr.open_dataset(tmp_path / "e.nc", engine="h5netcdf") as m:
        assert (m["class"].values == -1).all() and np.isnan(m["probability"].values).all()
        assert m.attrs["n_nodata"] == 13 * 9
    # a pixel needs --min-valid-steps observed steps: 13 is more than the 12 of the window -> all no-data
    with pytest.warns(UserWarning):
        assert (
            _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "f.nc", "--min-valid-steps", "13") == 0
        )
    with xr.open_dataset(tmp_path / "f.nc", engine="h5netcdf") as m:
        assert (m["class"].values == -1).all()
    assert not list(tmp_path.glob(".*.tmp*"))


def test_onnx_backend_maps_like_eager(run, small_cube, tmp_path, capsys):
    """--backend onnx on the head's encoder, exported again with ONNX (same weights): the same map."""
    from cropssl.export import export_encoder

    enc_dir = tmp_path / "enc-onnx"
    ckpt = run["encoder"].parent / f".{run['encoder'].name}.ckpt"  # the checkpoint export_tiny exported
    export_encoder(ckpt, enc_dir, formats=["safetensors", "onnx"], continue_bundle=False)
    args = ("--encoder", str(enc_dir))
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "a.nc", *args) == 0
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "b.nc", *args, "--backend", "onnx") == 0
    assert "core-hours for 580000 km²" in capsys.readouterr().out
    with xr.open_dataset(tmp_path / "a.nc", engine="h5netcdf") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        np.testing.assert_array_equal(a["class"].values, b["class"].values)
        np.testing.assert_allclose(a["probability"].values, b["probability"].values, atol=1e-4)
        assert "backend onnx" in b.attrs["encoder"]
    assert _predict(run, "tiny-enc + finetune", small_cube, tmp_path / "c.nc", "--backend", "onnx") == 2


def test_map_agreement_with_a_reference_layer_in_the_cube(run, small_cube, tmp_path, capsys):
    """A reference product built from the map itself: flipped pixels and 255 no-data, agreement by hand."""
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "a.nc") == 0
    with xr.open_dataset(tmp_path / "a.nc", engine="h5netcdf") as m:
        cls = m["class"].values.astype(int)
        names = json.loads(m.attrs["class_names"])
    crops = names.index("temporary_crops") if "temporary_crops" in names else 0
    ref = np.where(cls == crops, 100, 0).astype(np.uint8)
    ref[0, :4] = 255  # four no-data pixels
    ref[5, 3] = 100 if ref[5, 3] == 0 else 0  # one flipped pixel
    product = tmp_path / "product.nc"
    with xr.open_dataset(small_cube, engine="h5netcdf") as ds:
        xr.Dataset({"classification": (("y", "x"), ref)}, coords={"y": ds["y"], "x": ds["x"]}).to_netcdf(
            product
        )
    args = ("--reference", f"{product}:classification", "--reference-classes", "100=temporary_crops,0=other")
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "b.nc", *args) == 0
    agreement = json.loads((tmp_path / "b.agreement.json").read_text())
    assert agreement["n_excluded_reference"] == {"255": 4} and agreement["n_compared"] == 13 * 9 - 4
    assert agreement["overall_accuracy"] == pytest.approx((13 * 9 - 4 - 1) / (13 * 9 - 4))
    assert (tmp_path / "b.difference.png").stat().st_size > 1000
    assert "overall accuracy" in capsys.readouterr().out
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "c.nc", "--reference", f"{product}:nope",
                    "--reference-classes", "1=a") == 2  # fmt: skip
    assert "has no variable 'nope'" in capsys.readouterr().err


def test_evaluate_maps_cubes_and_reports_agreement(run, small_cube, tmp_path):
    """agreement.cubes: every head maps the cube; each map's agreement with the reference layer is in
    results.json and report.md, and equals the agreement computed by hand from the written map."""
    from sklearn.metrics import accuracy_score

    ref = np.zeros((13, 9), np.uint8)
    ref[:, 4:] = 100
    ref[0, 0] = 255
    product = tmp_path / "product.nc"
    with xr.open_dataset(small_cube, engine="h5netcdf") as ds:
        xr.Dataset({"lc": (("y", "x"), ref)}, coords={"y": ds["y"], "x": ds["x"]}).to_netcdf(product)
    cubes = [
        {"cube": str(small_cube), "reference": f"{product}:lc", "classes": "100=temporary_crops,0=other"}
    ]
    doc = evaluate(
        [str(run["encoder"])], [FRA], tmp_path / "ev", legend="LANDCOVER10", min_count=15,
        strategies=["logreg"], baselines=["catboost_features"], probes={"catboost": {"iterations": 20}},
        n_boot=50, efficiency={"repeats": 1, "batch_size": 32}, threads=1, agreement={"cubes": cubes},
    )  # fmt: skip
    rows = {r["method"]: r for r in doc["agreement"]}
    assert set(rows) == {"tiny-enc + logreg", "catboost_features"}  # heads saved although not asked
    for r in rows.values():
        with xr.open_dataset(tmp_path / "ev" / r["map"], engine="h5netcdf") as m:
            names = np.array(json.loads(m.attrs["class_names"]))
            pred = names[m["class"].values.astype(int)]
        pred = np.where(pred == "temporary_crops", "temporary_crops", "other")
        truth = np.where(ref == 100, "temporary_crops", "other")
        keep = ref != 255
        assert r["n_compared"] == keep.sum() and r["n_excluded"] == 1
        assert r["overall_accuracy"] == pytest.approx(accuracy_score(truth[keep], pred[keep]))
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Map agreement with a reference product" in report and "bel_small.nc" in report


def test_int8_backend_maps_almost_like_eager_and_keeps_no_data(run, small_cube, tmp_path):
    """--backend torch-int8 (calibrated on the cube's first pixels): the same no-data, nearly the same map."""
    from cropssl.backend_int8 import int8_unavailable

    if int8_unavailable() is not None:
        pytest.skip(f"backend torch-int8: {int8_unavailable()}")
    args = ("--encoder", str(run["encoder"]))
    assert _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "a.nc", *args) == 0
    assert (
        _predict(run, "tiny-enc + logreg", small_cube, tmp_path / "b.nc", *args, "--backend", "torch-int8")
        == 0
    )
    with xr.open_dataset(tmp_path / "a.nc", engine="h5netcdf") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        ca, cb = a["class"].values, b["class"].values
        np.testing.assert_array_equal(ca == -1, cb == -1)  # no-data stays no-data, nothing invented
        valid = ca != -1
        assert valid.any() and (ca[valid] == cb[valid]).mean() >= 0.95
        assert np.nanmax(np.abs(a["probability"].values - b["probability"].values)) < 0.2
        assert "backend torch-int8" in b.attrs["encoder"]
