"""The evaluation protocol and cropssl-evaluate on real WorldCereal data with real tiny / Presto encoders."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from cropssl.cli.evaluate import run as evaluate_run
from cropssl.config import CONFIG_DIR, ConfigKeyError
from cropssl.evaluation.data import prepare_data
from cropssl.evaluation.encoders import (
    EncoderDataError,
    check_compatible,
    embed_samples,
    encoder_cost,
    resolve_encoder,
)
from cropssl.evaluation.metrics import bootstrap_macro_f1, classification_metrics, paired_bootstrap_delta
from cropssl.evaluation.probes import fit_predict, fit_probe
from cropssl.evaluation.report import evaluate
from cropssl.evaluation.split_files import load_split
from cropssl.evaluation.splits import MissingClassWarning, group_split
from cropssl.profiling import encoder_macs_per_sample
from cropssl.schema import Batch
from tests.conftest import PRESTO, REAL_FILES, make_samples, require_shared
from tests.evaluation._evalhelpers import TINY_CONFIG, export_tiny, tiny_encoder, write_checkpoint

EA = REAL_FILES["wide"]
FRA = REAL_FILES["long"]
PRESTO_WEIGHTS = PRESTO / "default_model.pt"
FAST = {
    "strategies": ["logreg", "knn"],
    "baselines": ["catboost_features"],
    "probes": {"catboost": {"iterations": 20, "depth": 4}},
    "n_boot": 200,
    "efficiency": {"repeats": 1, "batch_size": 64},
    "threads": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("enc") / "tiny-mae", seed=0)


# ------------------------------------------------------------------------------------------ encoders
def test_resolve_export_checkpoint_random_and_presto(tiny_export, tmp_path):
    exp = resolve_encoder(str(tiny_export))
    assert exp.kind == "export" and exp.name == "tiny-mae" and not exp.encoder.training
    assert exp.info["ssl_method"] == "mae"
    ckpt = write_checkpoint(exp.encoder, tmp_path / "run" / "checkpoints" / "last.ckpt")
    ck = resolve_encoder(str(ckpt))
    assert ck.kind == "checkpoint" and ck.name == "run/last"
    assert ck.fingerprint == exp.fingerprint  # same weights, same embedding space
    rnd = resolve_encoder({"spec": "random", "config": TINY_CONFIG, "seed": 5, "name": "r"})
    assert rnd.kind == "random" and rnd.name == "r" and rnd.encoder.config["d"] == 32
    assert rnd.fingerprint == resolve_encoder("random", random_config=TINY_CONFIG, seed=5).fingerprint
    assert rnd.fingerprint != resolve_encoder("random", random_config=TINY_CONFIG, seed=6).fingerprint
    if PRESTO_WEIGHTS.exists():
        pr = resolve_encoder("presto")
        assert pr.kind == "presto" and pr.encoder.embed_dim == 128 and pr.sha256
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_encoder(str(tmp_path / "nope"))


def test_presto_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CROPSSL_PRESTO", str(tmp_path / "absent.pt"))
    with pytest.raises(FileNotFoundError, match="CROPSSL_PRESTO"):
        resolve_encoder("presto")


def test_embed_cost_and_compatibility(tiny_export):
    le = resolve_encoder(str(tiny_export))
    s = make_samples(70, seed=3)
    emb = embed_samples(le.encoder, s, batch_size=32)
    with torch.inference_mode():
        ref = le.encoder(Batch.from_samples(s)).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    cost = encoder_cost(le.encoder, 12, batch_size=32, repeats=1)
    assert cost["macs_per_pixel"] == encoder_macs_per_sample(le.encoder, 12)
    assert cost["px_per_s"] > 0 and cost["torch_threads"] == 1
    assert check_compatible(le, s)["unobserved_groups"] == []
    long = make_samples(4, T=30)
    with pytest.raises(EncoderDataError, match=r"T=30.*tiny-mae.*max_T=24"):
        check_compatible(le, long, "data long.parquet")


# ------------------------------------------------------------------------------------------ statistics
def test_fit_probe_matches_fit_predict():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    for kind in ("logreg", "knn"):
        p, q, model = fit_probe(kind, X[:40], y[:40], X[40:], n_classes=4)
        p2, q2 = fit_predict(kind, X[:40], y[:40], X[40:], n_classes=4)
        np.testing.assert_array_equal(p, p2)
        np.testing.assert_allclose(q, q2)
        assert model is not None and q.shape == (20, 4)


def test_paired_bootstrap_delta_against_a_plain_loop():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 50)
    a = np.where(rng.random(50) < 0.7, y, rng.integers(0, 3, 50))
    b = np.where(rng.random(50) < 0.5, y, rng.integers(0, 3, 50))
    got = paired_bootstrap_delta(y, a, b, 3, n_boot=300, seed=7)
    idx = np.random.default_rng(7).integers(0, 50, size=(300, 50))
    f = functools.partial(classification_metrics, class_names=["0", "1", "2"])
    d = np.array([f(y[i], a[i])["macro_f1"] - f(y[i], b[i])["macro_f1"] for i in idx])
    assert got["low"] == pytest.approx(np.quantile(d, 0.025))
    assert got["high"] == pytest.approx(np.quantile(d, 0.975))
    assert got["delta"] == pytest.approx(f(y, a)["macro_f1"] - f(y, b)["macro_f1"])
    same = paired_bootstrap_delta(y, a, a, 3, n_boot=50)
    assert same["delta"] == same["low"] == same["high"] == 0.0


# ------------------------------------------------------------------------------------------ protocol
def test_evaluate_real_data_geographic_split(tiny_export, tmp_path):
    """East Africa CROPTYPE24, South Sudan held out: every method on the same test samples, group leakage
    check, missing-class warning naming the class, per-country metrics, CIs and significance."""
    require_shared(EA)
    split = functools.partial(group_split, key="country", test_groups=["SSD"], val_size=0.1, seed=0)
    with pytest.warns(MissingClassWarning, match="no_crop"):
        doc = evaluate(
            [str(tiny_export), {"spec": "random", "name": "rand", "config": TINY_CONFIG}],
            [EA],
            tmp_path,
            legend="CROPTYPE24",
            min_count=5,
            split=split,
            **FAST,
        )
    names = [r["name"] for r in doc["results"]]
    assert sorted(names) == sorted(
        ["tiny-mae + logreg", "tiny-mae + knn", "rand + logreg", "rand + knn", "catboost_features"]
    )
    assert doc["split"]["leakage"]["passed"] is True
    assert doc["split"]["info"]["test_groups"] == ["SSD"]
    n_test = doc["n_test"]
    assert all(r["metrics"]["n"] == n_test for r in doc["results"])
    assert all(list(r["per_group"]["country"]) == ["SSD"] for r in doc["results"])
    assert any("no_crop" in w for w in doc["warnings"])
    pred = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(pred) == n_test and set(names) <= set(pred.columns)
    sp = load_split(tmp_path / "split.json")
    assert set(pred["sample_id"]) == set(sp.sample_id[sp.fold == "test"].tolist())
    classes = doc["labels"]["classes"]
    for r in doc["results"]:  # independent recomputation of the metrics and the CI
        yt = pred["true"].map(classes.index).to_numpy()
        yp = pred[r["name"]].map(classes.index).to_numpy()
        assert r["macro_f1"] == pytest.approx(classification_metrics(yt, yp, classes)["macro_f1"])
        ci = bootstrap_macro_f1(yt, yp, n_boot=200, seed=0, n_classes=len(classes))
        assert (r["ci"]["low"], r["ci"]["high"]) == pytest.approx((ci["low"], ci["high"]))
    sig = doc["significance"]
    assert sig["best"] == doc["results"][0]["name"]
    assert set(sig["vs_best"]) == set(names) - {sig["best"]}
    assert sig["baseline"] == "catboost_features"
    md = (tmp_path / "report.md").read_text()
    for n in ["tiny-mae", "rand", "catboost_features", "SSD", "no_crop", "Leakage check: **passed**"]:
        assert n in md, n
    for png in ("per_class_f1.png", "confusion_matrices.png", "frontier_macs.png", "frontier_px_per_s.png"):
        assert (tmp_path / png).stat().st_size > 5000
    # the self-checks are in results.json and at the top of the report (this test fold is small)
    checks = {c["check"] for c in doc["checks"]}
    assert "small_test_fold" in checks and doc["split"]["overlap"]["country"]["shared"] == 0
    assert md.index("Read these before the scores") < md.index("## Summary")


def test_labels_are_decided_on_train(tmp_path):
    require_shared(EA)
    from cropssl.data.ingest import read_input

    s = read_input(EA, 12)[0]
    split = functools.partial(group_split, key="country", test_groups=["SSD"], val_size=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_data(s, legend="CROPTYPE24", min_count=10, split=split)
    train = prep.split.fold == "train"
    counts = np.bincount(prep.y[train & (prep.y >= 0)], minlength=len(prep.classes))
    named = dict(zip(prep.classes, counts))
    assert all(n >= 10 for c, n in named.items() if c != "other")
    assert "no_crop" in prep.label_report["unseen"] or "no_crop" in prep.label_report["folded"]


def test_one_class_folds_are_refused():
    """A test (or train) fold of one class would score macro F1 1.000 (CI 1.000-1.000): refused."""
    s = make_samples(300, seed=2)
    wheat = s.label == 1101010001
    s.meta["country"] = np.where(wheat & (np.arange(300) % 2 == 0), "AAA", "BBB").astype(object)
    legend = {1101010001: "wheat", 1103000000: "maize", 1201000010: "grass"}
    split = functools.partial(group_split, key="country", test_groups=["AAA"], val_size=0.0)
    with pytest.raises(
        ValueError, match=r"1 class\(es\) in the test fold \(\['wheat'\]\).*at least 2 classes"
    ):
        prepare_data(s, legend=legend, min_count=1, split=split)
    # train: wheat only; test: 5 wheat + the rest
    country = np.where(wheat, "BBB", "AAA").astype(object)
    country[np.flatnonzero(wheat)[:5]] = "AAA"
    s.meta["country"] = country
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"1 class\(es\) in the train fold"):
            prepare_data(s, legend=legend, min_count=1, split=split)


def test_bad_inputs(tiny_export, tmp_path):
    require_shared(EA)
    with pytest.raises(ValueError, match=r"unknown legend 'CROPTYPE99'.*LANDCOVER10"):
        evaluate([str(tiny_export)], [EA], tmp_path / "a", legend="CROPTYPE99", **FAST)
    from cropssl.evaluation.splits import random_split

    with pytest.raises(ValueError, match="test fold .*empty"):
        evaluate(
            [str(tiny_export)],
            [EA],
            tmp_path / "b",
            split=functools.partial(random_split, test_size=0.0),
            **FAST,
        )
    short = export_tiny(tmp_path / "short-enc", seed=1, max_T=6)
    with pytest.raises(EncoderDataError, match=r"2017_east_africa.*T=12.*short-enc.*max_T=6"):
        evaluate([str(short)], [EA], tmp_path / "c", **FAST)
    with pytest.raises(ValueError, match="unknown strategies"):
        evaluate([str(tiny_export)], [EA], tmp_path / "d", **{**FAST, "strategies": ["svm"]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate([str(tiny_export)], [tmp_path / "missing.parquet"], tmp_path / "e", **FAST)


# ------------------------------------------------------------------------------------------ the app
def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_config_is_strict_and_composes(tmp_path):
    cfg = _compose(f"out={tmp_path}", "split=geographic", "encoder@random_encoder=tiny")
    assert cfg.split._target_.endswith("group_split") and cfg.random_encoder.d == 32
    assert cfg.finetune._target_.endswith("FinetuneConfig")
    with pytest.raises(ConfigKeyError, match="lgreg"):
        evaluate_run(_compose(f"out={tmp_path}", "+probes.lgreg.C=1"))
    with pytest.raises(ConfigKeyError, match="n_boots"):
        evaluate_run(_compose(f"out={tmp_path}", "+bootstrap.n_boots=3"))
    with pytest.raises(ConfigKeyError, match="epoch"):
        evaluate_run(_compose(f"out={tmp_path}", "+finetune.epoch=3"))
    with pytest.raises(ConfigKeyError, match="nme"):
        evaluate_run(_compose(f"out={tmp_path}", "encoders=[{spec: random, nme: x}]"))
    with pytest.raises(ConfigKeyError, match="top-level"):
        evaluate_run(_compose(f"out={tmp_path}", "+legnd=X"))
    with pytest.raises(ConfigKeyError, match="efficiency.bakend. Did you mean 'backend'"):
        evaluate_run(_compose(f"out={tmp_path}", "+efficiency.bakend=onnx"))
    # the schema (a dataclass registered with Hydra) types every value: a wrong type fails at composition
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="min_count"):
        _compose("min_count=ten")
    with pytest.raises(ConfigCompositionException, match="legnd"):
        _compose("legnd=X")
    # the command line: one line naming the key (with a suggestion) or the bad value, status 2, no traceback
    for arg, expected in [
        ("lgend=X", "unknown config key 'lgend'. Did you mean 'legend'?"),
        ("efficiency.bakend=onnx", "unknown config key 'efficiency.bakend'. Did you mean 'backend'?"),
        ("min_count=ten", "min_count: Value 'ten' of type 'str' could not be converted to Integer"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "cropssl.cli.evaluate", arg], capture_output=True, text=True
        )
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, (
            proc.stderr
        )


def test_app_in_process_with_finetune_and_scratch(tiny_export, tmp_path):
    """The composed app (compose API) with every strategy kind on France LANDCOVER10."""
    require_shared(FRA)
    doc = evaluate_run(
        _compose(
            f"out={tmp_path}",
            f"encoders=[{tiny_export}]",
            f"datasets=[{FRA}]",
            "legend=LANDCOVER10",
            "min_count=15",
            "strategies=[logreg,finetune]",
            "baselines=[scratch]",
            "encoder@random_encoder=tiny",
            "evaluate/finetune@finetune=fast",
            "bootstrap.n_boot=100",
            "efficiency.repeats=1",
            "efficiency.batch_size=32",
            "group_keys=[h3_l3_cell]",
        )
    )
    names = {r["name"] for r in doc["results"]}
    assert names == {"tiny-mae + logreg", "tiny-mae + finetune", "scratch"}
    ft = next(r for r in doc["results"] if r["name"] == "tiny-mae + finetune")
    assert ft["finetune"]["epochs_run"] == 3 and ft["finetune"]["n_val"] > 0
    scratch = next(r for r in doc["results"] if r["name"] == "scratch")
    assert scratch["encoder_config"]["d"] == 32 and scratch["cost"]["macs_per_pixel"] > 0
    assert doc["labels"]["legend"] == "LANDCOVER10" and "h3_l3_cell" in ft["per_group"]
    assert doc["command"].startswith("cropssl-evaluate")
    assert json.loads((tmp_path / "results.json").read_text())["n_test"] == doc["n_test"]


@pytest.mark.slow
def test_cli_end_to_end(tiny_export, tmp_path):
    """cropssl-evaluate as a subprocess: tiny exported encoder + Presto (if present) + catboost_features,
    with heads saved; report.md / results.json / plots name every encoder."""
    require_shared(EA)
    encoders = [str(tiny_export)] + (["presto"] if PRESTO_WEIGHTS.exists() else [])
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cropssl.cli.evaluate",
            f"encoders=[{','.join(encoders)}]",
            f"datasets=[{EA}]",
            "legend=CROPTYPE24",
            "min_count=10",
            "strategies=[logreg,finetune]",
            "baselines=[catboost_features]",
            "evaluate/finetune@finetune=fast",
            "probes.catboost.iterations=30",
            "bootstrap.n_boot=200",
            "efficiency.repeats=1",
            "save_heads=true",
            f"out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CROPSSL_PRESTO": str(PRESTO_WEIGHTS)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    want = ["tiny-mae"] + (["presto"] if PRESTO_WEIGHTS.exists() else [])
    for name in [*want, "catboost_features"]:
        assert name in md
        assert any(name == r["encoder"] or name == r["name"] for r in doc["results"])
    assert {e["name"] for e in doc["encoders"]} == set(want)
    for png in ("per_class_f1.png", "confusion_matrices.png", "frontier_macs.png", "frontier_px_per_s.png"):
        assert (out / png).exists()
    assert len(doc["heads"]) == 2 * len(want) + 1
    assert all((out / p).exists() for p in doc["heads"].values())
    # bad input through the app: one line, exit status 2
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cropssl.cli.evaluate",
            "legend=NOPE",
            f"datasets=[{EA}]",
            f"out={tmp_path / 'x'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "unknown legend 'NOPE'" in bad.stderr and "LANDCOVER10" in bad.stderr


def test_interrupted_evaluation_leaves_a_partial_report_marked_incomplete(tiny_export, tmp_path):
    """Every finished result is logged and written at once: killing the run leaves report.md (INCOMPLETE)
    with the results so far, instead of nothing after minutes of silence."""
    import signal
    import time

    require_shared(FRA)
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "cropssl.cli.evaluate", f"encoders=[{tiny_export}]", f"datasets=[{FRA}]",
           "legend=LANDCOVER10", "min_count=15", "strategies=[logreg,finetune]", "baselines=[]",
           "finetune.epochs=200", "finetune.patience=0", "efficiency.repeats=1", "threads=1",
           f"out={out}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out / "report.md").exists() and time.time() - t0 < 240 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=60)
    text = (out / "report.md").read_text()
    assert "INCOMPLETE" in text and "| tiny-mae + logreg |" in text, text
    assert "1/2 tiny-mae + logreg: macro F1" in stdout + err  # the log line as it happened
    assert any("1/2 tiny-mae + logreg" in p.read_text() for p in out.glob("*.log"))  # and in the log file


def test_rare_classes_and_groups_are_reported_up_front():
    from cropssl.evaluation.markdown_deploy import rare_and_groups_markdown

    per_class = {"maize": {"f1": 0.8, "support": 50}, "millet": {"f1": 0.25, "support": 4},
                 "rice": {"f1": 0.0, "support": 0}}  # fmt: skip
    doc = {
        "results": [{"name": "enc + logreg", "metrics": {"per_class": per_class},
                     "per_group": {"country": {"KEN": {"macro_f1": 0.5}, "UGA": {"macro_f1": 0.7}}}}],
        "split": {"class_counts": {"train": {"maize": 980, "millet": 10, "rice": 10, "(unseen class)": 3}}},
        "labels": {"classes": ["maize", "millet", "rice"]},
        "protocol": {"group_keys": ["country"]},
    }  # fmt: skip
    md = "\n".join(rare_and_groups_markdown(doc))
    assert "millet (10 train)" in md and "| enc + logreg | 0.25 | absent |" in md and "maize (" not in md
    assert "**Per country**" in md and "| enc + logreg | 0.500 | 0.700 |" in md


def test_efficiency_backend_times_export_dirs_with_onnx(tmp_path):
    """efficiency.backend=onnx times an export dir through ONNX Runtime; a random encoder stays eager."""
    pytest.importorskip("onnxruntime")
    from cropssl.export import export_encoder

    enc_dir = tmp_path / "tiny-onnx"
    ckpt = write_checkpoint(tiny_encoder(0), tmp_path / "t.ckpt")
    export_encoder(ckpt, enc_dir, formats=["safetensors", "onnx"], continue_bundle=False)
    fast = {**FAST, "strategies": ["logreg"], "baselines": [], "robustness": {"enabled": False}}
    doc = evaluate(
        [str(enc_dir), {"spec": "random", "name": "rand", "config": TINY_CONFIG}],
        [EA],
        tmp_path / "out",
        legend="CROPTYPE24",
        min_count=5,
        **{**fast, "efficiency": {"repeats": 1, "batch_size": 32, "backend": "onnx"}},
    )
    costs = {e["name"]: e["cost"] for e in doc["encoders"]}
    assert costs["tiny-onnx"]["backend"] == "onnx" and costs["tiny-onnx"]["px_per_s"] > 0
    assert costs["rand"]["backend"] == "torch"
    assert "(onnx)" in (tmp_path / "out" / "report.md").read_text()


def test_efficiency_embed_has_the_probes_read_the_int8_backend(tiny_export, tmp_path):
    """efficiency.embed=true: the frozen probes of an export dir read torch-int8 embeddings (timed too);
    their macro F1 stays near the fp32 probes' on the same split, and the report says which one it is."""
    from cropssl.backend_int8 import int8_unavailable

    if int8_unavailable() is not None:
        pytest.skip(f"backend torch-int8: {int8_unavailable()}")
    fast = {**FAST, "strategies": ["logreg"], "baselines": [], "robustness": {"enabled": False}}
    docs = {}
    for embed in (False, True):
        eff = {"repeats": 1, "batch_size": 32, "backend": "torch-int8", "embed": embed}
        docs[embed] = evaluate(
            [str(tiny_export)], [EA], tmp_path / f"out_{embed}", legend="CROPTYPE24", min_count=5,
            **{**fast, "efficiency": eff},
        )  # fmt: skip
    cost = {k: d["encoders"][0]["cost"] for k, d in docs.items()}
    assert cost[False]["backend"] == cost[True]["backend"] == "torch-int8"
    assert cost[False]["embedded_by"] == "torch" and cost[True]["embedded_by"] == "torch-int8"
    f1 = {k: d["results"][0]["metrics"]["macro_f1"] for k, d in docs.items()}
    assert abs(f1[True] - f1[False]) <= 0.03, f1
    assert "the probes read its embeddings" in (tmp_path / "out_True" / "report.md").read_text()
    assert "the probes read its embeddings" not in (tmp_path / "out_False" / "report.md").read_text()
