"""Inference backends of an exported Presto encoder against the official Presto reference embeddings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import cropssl
from cropssl.backends import BackendError, bf16_unavailable, cosine_agreement
from cropssl.cli.embed import main as embed_main
from cropssl.export import export_encoder
from cropssl.schema import Batch
from tests.conftest import PRESTO, REAL_FILES, require_shared

REFERENCE = PRESTO / "reference_embeddings.npz"
#: torch-bf16 where this CPU has bfloat16 kernels (auto times it then)
BF16 = ("torch-bf16",) if bf16_unavailable() is None else ()


@pytest.fixture(scope="module")
def presto_export(tmp_path_factory):
    require_shared(PRESTO / "default_model.pt", REFERENCE)
    out = tmp_path_factory.mktemp("presto") / "presto"
    export_encoder("presto", out, formats=["safetensors", "onnx", "onnx-int8"])
    return out


def _reference_batch() -> tuple[Batch, np.ndarray]:
    ref = np.load(REFERENCE)
    batch = Batch(
        x=torch.from_numpy(ref["x_normalized"]).float(),
        mask=torch.from_numpy(ref["mask"] > 0),
        month=(torch.from_numpy(ref["start_month"]).long()[:, None] + torch.arange(12)) % 12,
        latlon=torch.from_numpy(ref["latlon"]).float(),
        dynamic_world=torch.from_numpy(ref["dynamic_world"]).long(),
        label=torch.full((len(ref["embedding"]),), -1),
    )
    return batch.replace(x=batch.x.masked_fill(batch.mask, 0.0)), ref["embedding"]


def test_presto_export_and_every_backend_reproduce_the_official_embeddings(presto_export, capsys):
    batch, expected = _reference_batch()
    config = json.loads((presto_export / "config.json").read_text())
    assert (
        config["ssl_method"] == "presto (published weights)"
        and config["parent_checkpoint"]["kind"] == "presto"
    )
    assert config["continue"] is None and "onnx-int8" in config["formats"]
    assert "int8" in (presto_export / "README.md").read_text()
    out = {}
    for backend in ("torch", *BF16, "onnx", "onnx-int8", "auto"):
        enc = cropssl.load_encoder(presto_export, backend=backend)
        with torch.inference_mode():
            out[backend] = enc(batch).numpy()
        if backend != "auto":
            assert enc.backend == backend
    np.testing.assert_allclose(out["torch"], expected, atol=1e-4)  # the official Presto encoder's output
    np.testing.assert_allclose(out["onnx"], expected, atol=1e-4)
    assert cosine_agreement(out["onnx-int8"], expected) >= 0.995
    if BF16:  # bfloat16 products really ran (not fp32), within fp32-grade agreement of the official outputs
        assert cosine_agreement(out["torch-bf16"], expected) >= 0.9999
        assert out["torch-bf16"].dtype == np.float32 and np.abs(out["torch-bf16"] - out["torch"]).max() > 1e-4
    # auto timed every backend here and kept the fastest, saying so
    rates = enc.auto_rates
    assert set(rates) == {"torch", *BF16, "onnx", "onnx-int8"} and enc.backend == max(rates, key=rates.get)
    assert f"backend auto: {enc.backend} (measured px/s" in capsys.readouterr().err
    np.testing.assert_array_equal(out["auto"], out[enc.backend])


def test_every_backend_leaves_out_the_token_of_a_pixel_without_location(presto_export):
    batch, _ = _reference_batch()
    latlon = batch.latlon.clone()
    latlon[::3] = float("nan")
    lost = batch.replace(latlon=latlon)
    with torch.inference_mode():
        eager = cropssl.load_encoder(presto_export, backend="torch")
        expected, before = eager(lost).numpy(), eager(batch).numpy()
        assert np.isfinite(expected).all() and np.abs(expected[::3] - before[::3]).max() > 1e-2
        np.testing.assert_allclose(expected[1::3], before[1::3], atol=1e-5)
        for backend in ("onnx", "onnx-int8", *BF16):
            got = cropssl.load_encoder(presto_export, backend=backend)(lost).numpy()
            assert np.isfinite(got).all(), backend
            if backend == "onnx":
                np.testing.assert_allclose(got, expected, atol=1e-4)
            else:
                assert cosine_agreement(got, expected) >= 0.995, backend


def test_auto_falls_back_and_a_missing_backend_names_the_export_command(
    presto_export, tmp_path, capsys, monkeypatch
):
    lean = tmp_path / "lean"
    shutil.copytree(presto_export, lean)
    (lean / "encoder.int8.onnx").unlink()
    assert set(cropssl.load_encoder(lean, backend="auto").auto_rates) == {"torch", *BF16, "onnx"}
    assert "not available: onnx-int8: " in capsys.readouterr().err
    (lean / "encoder.onnx").unlink()
    with monkeypatch.context() as m:  # a torch built without oneDNN has no bfloat16 kernels either
        m.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        enc = cropssl.load_encoder(lean, backend="auto")
        assert enc.backend == "torch" and "backend auto: eager PyTorch" in capsys.readouterr().err
        with pytest.raises(BackendError, match="torch-bf16 unavailable: this CPU has no bfloat16"):
            cropssl.load_encoder(lean, backend="torch-bf16")
    if BF16:  # bf16 that misses the fp32-grade agreement on auto's batch is left out, with the cosine said
        monkeypatch.setattr("cropssl.backends.BF16_MIN_COSINE", 1.0 + 1e-9)
        enc = cropssl.load_encoder(lean, backend="auto")
        assert enc.backend == "torch" and "torch-bf16: cosine 0.99" in capsys.readouterr().err
        monkeypatch.undo()
    with pytest.raises(
        BackendError, match=r"no encoder\.int8\.onnx.*cropssl-export .* --format onnx,onnx-int8"
    ):
        cropssl.load_encoder(lean, backend="onnx-int8")
    with pytest.raises(BackendError, match="unknown backend 'gpu'"):
        cropssl.load_encoder(lean, backend="gpu")
    # an int8 model that failed its check at export is not picked by auto
    shutil.copy(presto_export / "encoder.int8.onnx", lean / "encoder.int8.onnx")
    shutil.copy(presto_export / "encoder.onnx", lean / "encoder.onnx")
    cfg = json.loads((lean / "config.json").read_text())
    cfg["verification"]["onnx-int8"]["min_cosine"] = 0.9
    (lean / "config.json").write_text(json.dumps(cfg))
    assert set(cropssl.load_encoder(lean, backend="auto").auto_rates) == {"torch", *BF16, "onnx"}


def test_backend_limits_timesteps_and_warns_about_threads(presto_export):
    batch, _ = _reference_batch()
    enc = cropssl.load_encoder(presto_export, backend="onnx")
    long = batch.replace(
        x=batch.x.repeat(1, 7, 1), mask=batch.mask.repeat(1, 7, 1), month=batch.month.repeat(1, 7),
        dynamic_world=batch.dynamic_world.repeat(1, 7),
    )  # fmt: skip
    with pytest.raises(BackendError, match="at most T=72"):
        enc(long)
    import os

    from cropssl.backends import load_backend

    with pytest.warns(UserWarning, match="threads on a machine with"):
        load_backend(presto_export, "onnx", threads=(os.cpu_count() or 1) + 1)


def test_embed_cli_backends_agree(presto_export, tmp_path, capsys):
    require_shared(REAL_FILES["wide"])
    import pandas as pd

    from cropssl.backend_int8 import int8_unavailable

    int8 = ("torch-int8",) if int8_unavailable() is None else ()
    for backend in ("torch", *BF16, "onnx-int8", *int8):
        out = tmp_path / f"{backend}.parquet"
        args = ["--encoder", str(presto_export), str(REAL_FILES["wide"]), "--out", str(out), "--quiet"]
        assert embed_main([*args, "--backend", backend]) == 0
        # the one-off calibration and compile is said apart from the px/s
        assert ("s of it built the int8 graph" in capsys.readouterr().out) == (backend == "torch-int8")
    a = pd.read_parquet(tmp_path / "torch.parquet")
    cols = [f"emb_{j}" for j in range(128)]
    for backend in (*BF16, "onnx-int8", *int8):
        b = pd.read_parquet(tmp_path / f"{backend}.parquet")
        least = 0.9999 if backend == "torch-bf16" else 0.995
        assert cosine_agreement(a[cols].to_numpy(), b[cols].to_numpy()) >= least, backend


# ---------------------------------------------------------------------------------------------- torch-int8
@pytest.fixture(scope="module")
def int8_encoder(presto_export):
    from cropssl.backend_int8 import int8_unavailable

    why = int8_unavailable()
    if why is not None:
        pytest.skip(f"backend torch-int8: {why}")
    return cropssl.load_encoder(presto_export, backend="torch-int8")


def test_torch_int8_reproduces_the_official_embeddings_and_calibrates_once(int8_encoder, presto_export):
    batch, expected = _reference_batch()
    fp32 = cropssl.load_encoder(presto_export)
    with torch.inference_mode():
        out = int8_encoder(batch).numpy()
        # calibrated on its first call (the 48 reference pixels), then reused for any other batch
        assert int8_encoder.calibrated_on == len(batch) and int8_encoder.backend == "torch-int8"
        part = batch.select(slice(5, 22))  # 17 pixels: a partial chunk, other sequence lengths
        part_out = int8_encoder(part).numpy()
        assert int8_encoder.calibrated_on == len(batch)
        part_fp32 = fp32(part).numpy()
        # quantising and compiling its copy of the blocks left the fp32 encoder it checks against untouched
        np.testing.assert_allclose(int8_encoder.fp32(batch).numpy(), expected, atol=1e-4)
    assert out.shape == expected.shape and part_out.shape == (17, 128)
    assert cosine_agreement(out, expected) >= 0.995
    assert cosine_agreement(part_out, part_fp32) >= 0.995
    assert int8_encoder.fallbacks == 0
    # int8 is not fp32: the check below is not vacuous
    assert np.abs(out - expected).max() > 1e-4


def test_torch_int8_falls_back_to_fp32_when_the_checked_pixels_disagree(int8_encoder, presto_export):
    batch, _ = _reference_batch()
    fp32 = cropssl.load_encoder(presto_export)
    with torch.inference_mode():
        int8_encoder(batch)  # calibrated (module fixture: maybe already)
        strict = int8_encoder.min_cosine
        int8_encoder.min_cosine = 0.999999  # int8 reaches ~0.9998: every checked batch now disagrees
        try:
            with pytest.warns(UserWarning, match=r"int8 embeddings reached cosine 0\.99.* embedded in fp32"):
                out = int8_encoder(batch)
            again = int8_encoder(batch)  # warned once, counted every time
        finally:
            int8_encoder.min_cosine = strict
        np.testing.assert_array_equal(out.numpy(), fp32(batch).numpy())
        np.testing.assert_array_equal(again.numpy(), fp32(batch).numpy())
    assert int8_encoder.fallbacks == 2


def test_torch_int8_unavailable_names_what_is_missing(presto_export, monkeypatch):
    import sys

    from cropssl.backend_int8 import int8_unavailable

    with monkeypatch.context() as m:
        m.setenv("PATH", "")
        assert int8_unavailable() in (
            "no C++ compiler found (torch.compile needs g++ to build the int8 graph)",
            "torchao is not installed (pip install torchao)",
        )
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if torchao were not installed
    assert int8_unavailable() == "torchao is not installed (pip install torchao)"
    with pytest.raises(BackendError, match=r"torch-int8 unavailable: torchao is not installed"):
        cropssl.load_encoder(presto_export, backend="torch-int8")
