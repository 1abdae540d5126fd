"""Encoder export (safetensors / TorchScript / ONNX / continue bundle) and cropssl-embed, real checkpoint.

One tiny real pre-training run (cropssl-pretrain in a subprocess, TINY overrides) makes the checkpoint; one
export of it is shared by the tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cropssl.cli.embed import ids_path
from cropssl.cli.embed import main as embed_main
from cropssl.cli.export import main as export_main
from cropssl.data.ingest import read_input
from cropssl.data.shard_writer import write_shards
from cropssl.data.shards import read_shards
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.export import (
    CONTINUE_FILE,
    ExportError,
    export_encoder,
    load_continue_bundle,
    load_encoder,
)
from cropssl.schema import BANDS, NORM_ADD, NORM_DIV, Batch
from tests.conftest import REAL_FILES, make_samples, require_shared
from tests.test_pretrain import TINY, pretrain, tiny

ATOL = 1e-5


@pytest.fixture(scope="session")
def export_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "shards"
    write_shards(make_samples(300, seed=7), out, samples_per_record=64, records_per_shard=2)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(export_shards, tmp_path_factory) -> Path:
    """A real checkpoint of a 3-step tiny MAE run."""
    run = tmp_path_factory.mktemp("export") / "run"
    pretrain(*TINY, f"data.train={export_shards}", "trainer.max_steps=3", f"run_dir={run}")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    return ckpt


@pytest.fixture(scope="session")
def exported(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "enc"
    export_encoder(tiny_ckpt, out, metrics={"probe/accuracy": 0.5})
    return out


def _ckpt_encoder(ckpt_path: Path) -> PixelTimeSeriesEncoder:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    enc = PixelTimeSeriesEncoder(**ckpt["cropssl"]["encoder_config"])
    enc.load_state_dict({k[8:]: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")})
    return enc.eval()


def _batch(n: int = 48, T: int = 12, seed: int = 3) -> Batch:
    b = Batch.from_samples(make_samples(n, T=T, seed=seed))
    assert b.mask.any()  # missing values
    b.dynamic_world[: n // 2] = torch.randint(0, 9, (n // 2, T))  # some Dynamic World present
    return b


def _args(b: Batch) -> tuple[torch.Tensor, ...]:
    return b.x, b.mask, b.month, b.latlon, b.dynamic_world


def test_checkpoint_loads_with_weights_only(tiny_ckpt):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["cropssl"]["method"] == "mae"


def test_export_dir_contents_and_config(exported, tiny_ckpt):
    names = {p.name for p in exported.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "README.md",
        "encoder.torchscript.pt",
        "encoder.onnx",
        CONTINUE_FILE,
    } <= names
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["formats_failed"] == {} and set(cfg["formats"]) == {
        "safetensors",
        "torchscript",
        "onnx",
        "onnx-int8",
    }
    assert "encoder.int8.onnx" in names and cfg["verification"]["onnx-int8"]["min_cosine"] > 0.99
    assert cfg["encoder_config"]["d"] == 32 and cfg["embed_dim"] == 32 and cfg["ssl_method"] == "mae"
    assert cfg["inputs"]["bands"] == list(BANDS)
    assert cfg["inputs"]["timesteps"] == {"min": 1, "max": 72}
    assert cfg["inputs"]["normalization"]["add"] == NORM_ADD.tolist()
    assert cfg["inputs"]["normalization"]["div"] == NORM_DIV.tolist()
    from cropssl.artifacts import sha256_file

    assert cfg["parent_checkpoint"]["path"] == str(tiny_ckpt.resolve())
    assert cfg["parent_checkpoint"]["sha256"] == sha256_file(tiny_ckpt)
    assert cfg["lineage"][-1]["method"] == "mae" and cfg["lineage"][-1]["exported_from"]["sha256"]
    assert cfg["metrics"]["probe/accuracy"] == 0.5 and "train/loss" in cfg["metrics"]
    assert cfg["onnx"]["opset"] >= 17
    assert cfg["verification"]["onnx"]["max_abs_diff"] < 1e-4
    assert cfg["continue"]["method"] == "mae" and cfg["continue"]["method_config"]["decoder_dim"] == 32
    card = (exported / "README.md").read_text()
    assert "load_encoder" in card and str(tiny_ckpt.resolve()) in card and "probe/accuracy" in card
    from safetensors.torch import load_file

    keys = set(load_file(str(exported / "model.safetensors")))
    assert keys and not any(k.startswith("encoder.") for k in keys) and "norm.weight" in keys
    from cropssl.cli.lineage import read_lineage

    assert read_lineage(exported)[-1]["run_dir"] == str(tiny_ckpt.parents[1])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_all_formats_match_the_checkpoint_encoder(exported, tiny_ckpt):
    import onnxruntime as ort

    ref_enc = _ckpt_encoder(tiny_ckpt)
    for T in (12, 5):
        b = _batch(T=T)
        with torch.inference_mode():
            ref = ref_enc(b).numpy()
            loaded = load_encoder(exported)
            assert not loaded.training
            got = loaded(b).numpy()
            ts = torch.jit.load(str(exported / "encoder.torchscript.pt"))
            got_ts = ts(*_args(b)).numpy()
        sess = ort.InferenceSession(str(exported / "encoder.onnx"), providers=["CPUExecutionProvider"])
        feeds = dict(zip(["x", "mask", "month", "latlon", "dynamic_world"], (t.numpy() for t in _args(b))))
        got_onnx = sess.run(None, feeds)[0]
        assert ref.shape == (48, 32)
        np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got_ts, ref, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got_onnx, ref, atol=ATOL, rtol=0)


def test_an_encoder_without_the_latlon_token_exports_and_ignores_the_location(export_shards, tmp_path):
    """A BYOL run (``location=no_token``, its default) exports to ONNX too; both backends agree with
    the checkpoint's encoder, and moving the pixels elsewhere, or hiding where they are, changes nothing."""
    run = tmp_path / "run"
    pretrain(*tiny("byol"), f"data.train={export_shards}", "trainer.max_steps=3", f"run_dir={run}")
    out = tmp_path / "enc"
    export_encoder(run / "checkpoints" / "last.ckpt", out, formats=["safetensors", "onnx"])
    assert json.loads((out / "config.json").read_text())["encoder_config"]["use_latlon"] is False
    ref_enc = _ckpt_encoder(run / "checkpoints" / "last.ckpt")
    assert ref_enc.latlon_embed is None
    b = _batch()
    moved = b.replace(latlon=torch.stack([-b.latlon[:, 0], b.latlon[:, 1] + 90.0], dim=1))
    hidden = b.replace(latlon=torch.full_like(b.latlon, float("nan")))
    with torch.inference_mode():
        ref = ref_enc(b).numpy()
        for backend in ("torch", "onnx"):
            enc = load_encoder(out, backend=backend)
            outs = [np.asarray(enc(x)) for x in (b, moved, hidden)]
            np.testing.assert_allclose(outs[0], ref, atol=ATOL, rtol=0, err_msg=backend)
            np.testing.assert_array_equal(outs[1], outs[0], err_msg=backend)
            np.testing.assert_array_equal(outs[2], outs[0], err_msg=backend)


def test_load_encoder_without_lightning_hydra_timm(exported, tmp_path):
    out = tmp_path / "emb.npy"
    script = textwrap.dedent(
        f"""
        import sys
        BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf", "timm")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import of {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        try:
            import timm  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("the import blocker does not work")
        import numpy as np
        import torch
        from cropssl.export import load_encoder
        from cropssl.schema import Batch
        from tests.conftest import make_samples

        enc = load_encoder({str(exported)!r})
        with torch.inference_mode():
            np.save({str(out)!r}, enc(Batch.from_samples(make_samples(16, seed=3))).numpy())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    with torch.inference_mode():
        ref = load_encoder(exported)(Batch.from_samples(make_samples(16, seed=3))).numpy()
    np.testing.assert_allclose(np.load(out), ref, atol=ATOL, rtol=0)


def test_missing_files_give_clear_errors(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks model\.safetensors.*cropssl-export"):
        load_encoder(broken)
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks config\.json.*cropssl-export"):
        load_encoder(broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(tmp_path / "nowhere")


def test_bad_checkpoints_give_clear_errors(tiny_ckpt, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_encoder(tmp_path / "nope.ckpt", tmp_path / "o")
    assert export_main([str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": ckpt["state_dict"]}, bare)
    with pytest.raises(ExportError, match="no cropssl metadata"):
        export_encoder(bare, tmp_path / "o")
    assert export_main([str(bare), "--out", str(tmp_path / "o")]) == 2
    assert "no cropssl metadata" in capsys.readouterr().err
    with pytest.raises(ExportError, match="no teacher encoder weights"):
        export_encoder(tiny_ckpt, tmp_path / "o", formats=["safetensors"], teacher=True)
    assert not (tmp_path / "o").exists()


def test_cli_export_formats_and_overwrite(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "enc"
    argv = [str(tiny_ckpt), "--out", str(out), "--format", "safetensors", "--no-continue-bundle"]
    assert export_main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert export_main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert export_main([*argv, "--overwrite", "--metric", "knn/acc=0.75"]) == 0
    assert json.loads((out / "config.json").read_text())["metrics"]["knn/acc"] == 0.75
    assert export_main([*argv, "--overwrite", "--format", "safetensors,tflite"]) == 2
    assert "tflite" in capsys.readouterr().err


def test_failed_onnx_export_is_recorded_and_other_formats_written(tiny_ckpt, tmp_path, capsys):
    # a real exporter failure: an opset the TorchScript-based exporter does not support
    with pytest.warns(UserWarning, match="ONNX export failed"):
        cfg = export_encoder(
            tiny_ckpt,
            tmp_path / "enc",
            formats=["safetensors", "torchscript", "onnx"],
            continue_bundle=False,
            onnx_opset=999,
            onnx_exporter="torchscript",
        )
    assert "onnx" in cfg["formats_failed"] and "999" in cfg["formats_failed"]["onnx"]
    assert cfg["formats"] == ["safetensors", "torchscript"]
    assert not (tmp_path / "enc" / "encoder.onnx").exists()
    assert (tmp_path / "enc" / "encoder.torchscript.pt").exists()
    assert "onnx" in json.loads((tmp_path / "enc" / "config.json").read_text())["formats_failed"]
    assert load_encoder(tmp_path / "enc").embed_dim == 32


@pytest.mark.slow
def test_dynamo_onnx_exporter_matches(tiny_ckpt, tmp_path):
    import onnxruntime as ort

    cfg = export_encoder(
        tiny_ckpt, tmp_path / "enc", formats=["onnx"], continue_bundle=False, onnx_exporter="dynamo"
    )
    assert cfg["onnx"]["exporter"] == "dynamo" and cfg["onnx"]["opset"] >= 18 and not cfg["formats_failed"]
    b = _batch(n=9, T=7)
    sess = ort.InferenceSession(str(tmp_path / "enc" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(
        None, dict(zip(["x", "mask", "month", "latlon", "dynamic_world"], (t.numpy() for t in _args(b))))
    )
    with torch.inference_mode():
        ref = _ckpt_encoder(tiny_ckpt)(b).numpy()
    np.testing.assert_allclose(got[0], ref, atol=ATOL, rtol=0)


def test_continue_bundle_and_from_weights(exported, tiny_ckpt):
    from cropssl.checkpointing import init_from_weights
    from cropssl.methods.mae import MAE

    state, info = load_continue_bundle(exported)
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert set(state) == set(ckpt["state_dict"])
    for k, v in ckpt["state_dict"].items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)
    assert info["method"] == "mae" and info["global_step"] == 3
    # the full method state loads into a method built from the recorded hyper-parameters
    hp = {k: v for k, v in info["method_config"].items() if k not in ("_target_", "name")}
    enc_cfg = json.loads((exported / "config.json").read_text())["encoder_config"]
    method = MAE(PixelTimeSeriesEncoder(**enc_cfg), **hp)
    method.load_state_dict(state, strict=True)
    # start.mode=from_weights with the export dir as source loads the encoder
    fresh = MAE(PixelTimeSeriesEncoder(d=32, depth=1, heads=4, mlp_ratio=2.0), **hp)
    report = init_from_weights(fresh, str(exported))
    assert report["kind"] == "export" and not report["initialised"]
    torch.testing.assert_close(fresh.encoder.norm.weight, ckpt["state_dict"]["encoder.norm.weight"])


def test_embed_shard_dir_npy(exported, export_shards, tmp_path):
    out = tmp_path / "emb.npy"
    argv = ["--encoder", str(exported), str(export_shards), "--out", str(out), "--batch-size", "100"]
    assert embed_main(argv) == 0
    emb = np.load(out)
    ids = pd.read_parquet(ids_path(out))
    samples = read_shards(export_shards)
    assert emb.shape == (len(samples), 32) and emb.dtype == np.float32
    assert ids["sample_id"].tolist() == list(samples.meta["sample_id"])
    np.testing.assert_allclose(ids[["lat", "lon"]].to_numpy(), samples.latlon, atol=1e-6)
    assert ids["label"].tolist() == samples.label.tolist()
    with torch.inference_mode():
        ref = load_encoder(exported)(Batch.from_samples(samples)).numpy()
    np.testing.assert_allclose(emb, ref, atol=ATOL, rtol=0)


def test_embed_real_parquet(exported, tmp_path):
    path = REAL_FILES["wide"]
    require_shared(path)
    out = tmp_path / "emb.parquet"
    assert embed_main(["--encoder", str(exported), str(path), "--out", str(out), "--quiet"]) == 0
    df = pd.read_parquet(out)
    samples, _ = read_input(path, 12)
    emb_cols = [f"emb_{j}" for j in range(32)]
    assert len(df) == len(samples) > 0 and set(emb_cols) <= set(df.columns)
    assert df["sample_id"].tolist() == list(samples.meta["sample_id"])
    assert df["label"].tolist() == samples.label.tolist()
    with torch.inference_mode():
        ref = load_encoder(exported)(Batch.from_samples(samples)).numpy()
    np.testing.assert_allclose(df[emb_cols].to_numpy(), ref, atol=ATOL, rtol=0)


def test_embed_pixels_without_location_or_with_projected_coordinates(exported, tmp_path, capsys):
    require_shared(REAL_FILES["wide"])
    df = pd.read_parquet(REAL_FILES["wide"]).head(40)
    df.loc[:9, "lat"] = np.nan
    path, out = tmp_path / "w.parquet", tmp_path / "emb.parquet"
    df.to_parquet(path)
    assert embed_main(["--encoder", str(exported), str(path), "--out", str(out), "--quiet"]) == 0
    assert "w.parquet: 10 samples have no location" in capsys.readouterr().err
    emb = pd.read_parquet(out).filter(like="emb_").to_numpy()
    assert np.isfinite(emb).all() and len(emb) == 40  # an embedding without the lat/lon token, not NaN
    df["lat"] = 9_000_000.0  # UTM northing in metres
    df.to_parquet(path)
    out.unlink()
    assert embed_main(["--encoder", str(exported), str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "w.parquet: 40 of 40 samples have a location outside WGS84" in err and "Traceback" not in err
    assert not out.exists()


def test_embed_cube_has_pixel_rows_and_cols(exported, tmp_path):
    path = REAL_FILES["cube"]
    require_shared(path)
    out = tmp_path / "cube.npy"
    argv = ["--encoder", str(exported), str(path), "--out", str(out), "--batch-size", "4096", "--quiet"]
    assert embed_main(argv) == 0
    ids = pd.read_parquet(ids_path(out))
    assert np.load(out).shape == (len(ids), 32)
    assert ids["row"].between(0, 99).all() and ids["col"].between(0, 99).all()
    assert len(set(zip(ids["row"], ids["col"]))) == len(ids) == 100 * 100


def test_embed_rejects_bands_and_timesteps_mismatch(exported, export_shards, tmp_path, capsys):
    short = tmp_path / "short"
    shutil.copytree(exported, short)
    cfg = json.loads((short / "config.json").read_text())
    cfg["encoder_config"]["max_T"] = 8  # the position table is not a weight: the encoder loads with max_T=8
    (short / "config.json").write_text(json.dumps(cfg))
    assert embed_main(["--encoder", str(short), str(export_shards), "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert "T=12" in err and "max_T=8" in err
    wrong = tmp_path / "wrong"
    shutil.copytree(exported, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["inputs"]["bands"] = cfg["inputs"]["bands"][:-1]
    (wrong / "config.json").write_text(json.dumps(cfg))
    assert embed_main(["--encoder", str(wrong), str(export_shards), "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert "expects bands" in err and "'NDVI']" in err and "slope'" in err
    assert embed_main(["--encoder", str(exported), str(export_shards), "--out", str(tmp_path / "e.csv")]) == 2
    assert not (tmp_path / "e.npy").exists()


def test_truncated_weights_are_named_with_the_fix(exported, tmp_path, capsys):
    broken = tmp_path / "cut"
    shutil.copytree(exported, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated or corrupt.*cropssl-export"):
        load_encoder(broken)
    path = REAL_FILES["wide"]
    require_shared(path)
    assert embed_main(["--encoder", str(broken), str(path), "--out", str(tmp_path / "e.npy"), "--quiet"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err and not (tmp_path / "e.npy").exists()


def test_embed_gives_nan_for_samples_without_observations(exported, tmp_path, capsys):
    """A sample with no S1/S2 value gets NaN and valid=false, not an embedding of its meteo/DEM alone."""
    from cropssl.schema import BAND_INDEX, S2_BANDS

    s = make_samples(30, seed=5)
    sensors = [BAND_INDEX[b] for b in ("VV", "VH", *S2_BANDS, "NDVI")]
    s.mask[:5][..., sensors] = True
    s.x[:5][..., sensors] = 0
    s.mask[5:8][:, 1:][..., sensors] = True  # one observed month only
    write_shards(s, tmp_path / "sh")
    out = tmp_path / "e.parquet"
    assert embed_main(["--encoder", str(exported), str(tmp_path / "sh"), "--out", str(out), "--quiet"]) == 0
    assert "5 sample(s)" in capsys.readouterr().err
    df = pd.read_parquet(out)
    assert (~df["valid"]).sum() == 5 and df.loc[~df["valid"], "emb_0"].isna().all()
    assert df.loc[df["valid"], "emb_0"].notna().all()
    args = ["--encoder", str(exported), str(tmp_path / "sh"), "--out", str(out), "--quiet"]
    assert embed_main([*args, "--min-valid-steps", "2"]) == 0
    assert (~pd.read_parquet(out)["valid"]).sum() == 8
