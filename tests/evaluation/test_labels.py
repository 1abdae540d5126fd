from __future__ import annotations

import collections
import json
import warnings

import numpy as np
import pytest

from cropssl.evaluation.labels import (
    LabelEncoder,
    UnknownCodeWarning,
    encode_labels,
    list_legends,
    load_legend,
)
from tests.conftest import REAL_FILES, WORLDCEREAL, require_shared

MAPPINGS = WORLDCEREAL / "class_mappings.json"
LEGEND = {1: "a", 2: "a", "3": "b", 4: "c", 5: "ignore"}
CODES = np.array([1, 1, 2, 3, 3, 3, 4, 5, 9, 9, -1])


def test_load_legend_by_name_matches_json() -> None:
    require_shared(MAPPINGS)
    raw = json.loads(MAPPINGS.read_text())
    legend = load_legend("LANDCOVER10")
    assert legend == {int(k): v for k, v in raw["LANDCOVER10"].items()}
    assert legend[1100000000] == "temporary_crops"
    assert set(list_legends()) == set(raw)


def test_unknown_legend_lists_valid_names() -> None:
    require_shared(MAPPINGS)
    with pytest.raises(ValueError, match="CROPTYPE24") as exc:
        load_legend("CROPTYPE99")
    assert "LANDCOVER10" in str(exc.value)


def test_user_dict_and_bad_key() -> None:
    assert load_legend(LEGEND) == {1: "a", 2: "a", 3: "b", 4: "c", 5: "ignore"}
    with pytest.raises(ValueError, match="not an integer"):
        load_legend({"wheat": "a"})


def test_fold_rare_and_drop_unknown() -> None:
    with pytest.warns(UnknownCodeWarning, match="2 samples"):
        ls = encode_labels(CODES, LEGEND, min_count=2)
    # a: 3, b: 3, c: 1 (< 2, folded), 5 -> ignore, 9 unknown (dropped), -1 unlabelled
    assert ls.classes == ["a", "b", "other"]
    np.testing.assert_array_equal(ls.y, [0, 0, 0, 1, 1, 1, 2, -1, -1, -1, -1])
    r = ls.report
    assert r["folded"] == {"c": 1}
    assert r["unknown_codes"] == {"9": 2}
    assert r["ignored"] == {"ignore": 1}
    assert r["n_unlabelled"] == 1
    assert r["class_counts"] == {"a": 3, "b": 3, "other": 1}
    assert (r["n_used"], r["n_excluded"], r["n_total"]) == (7, 4, 11)
    assert ls.names.tolist()[:7] == ["a"] * 3 + ["b"] * 3 + ["other"]
    json.dumps(r)  # serialisable


def test_unknown_to_other_and_error() -> None:
    with pytest.warns(UnknownCodeWarning):
        ls = encode_labels(CODES, LEGEND, min_count=2, unknown="other")
    assert ls.report["class_counts"] == {"a": 3, "b": 3, "other": 3}
    assert ls.y[8] == ls.y[9] == 2
    with pytest.raises(ValueError, match="not in legend"):
        encode_labels(CODES, LEGEND, unknown="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ls = encode_labels(CODES[:8], LEGEND)  # no unknown code: no warning
    assert ls.classes == ["a", "b", "c"]


def test_encoder_fit_on_train_apply_to_test_and_roundtrip() -> None:
    enc = LabelEncoder({1: "a", 2: "b", 3: "c"}, min_count=2).fit(np.array([1, 1, 2, 2, 3]))
    assert enc.classes_ == ["a", "b", "other"]
    enc2 = LabelEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    ls = enc2.transform(np.array([3, 2, 1]))
    np.testing.assert_array_equal(ls.y, [2, 1, 0])
    assert ls.report["folded"] == {"c": 1}
    enc3 = LabelEncoder({1: "a", 2: "b", 3: "c"}).fit(np.array([1, 2]))
    ls = enc3.transform(np.array([3, 1]))  # c unseen, no other class -> dropped, reported
    np.testing.assert_array_equal(ls.y, [-1, 0])
    assert ls.report["unseen"] == {"c": 1}
    with pytest.raises(RuntimeError):
        LabelEncoder(LEGEND).transform(CODES)


def test_real_east_africa_croptype28_reports_unknown_codes() -> None:
    require_shared(REAL_FILES["wide"], MAPPINGS)
    from cropssl.data.ingest import read_input

    samples, _ = read_input(REAL_FILES["wide"], 12)
    legend = json.loads(MAPPINGS.read_text())["CROPTYPE28"]
    counts = collections.Counter(samples.label.tolist())
    expected_unknown = {str(c): n for c, n in counts.items() if str(c) not in legend}
    assert expected_unknown  # the file has codes CROPTYPE28 does not know
    with pytest.warns(UnknownCodeWarning):
        ls = encode_labels(samples, "CROPTYPE28", min_count=10)
    assert ls.report["unknown_codes"] == expected_unknown
    names = collections.Counter(legend[str(c)] for c in samples.label.tolist() if str(c) in legend)
    assert ls.report["class_counts"]["sorghum"] == names["sorghum"]
    assert ls.report["folded"] == {k: v for k, v in names.items() if v < 10}
    assert ls.report["n_used"] == len(samples) - sum(expected_unknown.values())


def test_custom_legends_from_files_configs_and_class_mappings(tmp_path):
    """A legend as a YAML / JSON file, as an inline Hydra mapping (int keys), and class_mappings= as a key."""
    from hydra import compose, initialize_config_dir

    from cropssl.cli.evaluate import run as evaluate_run
    from cropssl.config import CONFIG_DIR

    codes = {1101000000: "wheat", 1100000000: "crop"}
    (tmp_path / "legend.yaml").write_text("1101000000: wheat\n1100000000: crop\n")
    (tmp_path / "legend.json").write_text(json.dumps({str(k): v for k, v in codes.items()}))
    assert load_legend(str(tmp_path / "legend.yaml")) == codes == load_legend(tmp_path / "legend.json")
    assert LabelEncoder(str(tmp_path / "legend.yaml")).legend_name == "legend.yaml"
    with pytest.raises(ValueError, match="legend file .* not found"):
        load_legend(str(tmp_path / "nope.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_legend(str(tmp_path / "list.yaml"))
    # class_mappings= points at another file of legends
    (tmp_path / "cm.json").write_text(json.dumps({"MINE": {"1101000000": "wheat"}}))
    assert load_legend("MINE", tmp_path / "cm.json") == {1101000000: "wheat"}

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            overrides=["legend={1101000000: wheat, 1100000000: crop}", f"out={tmp_path / 'e'}"],
        )
        cfg2 = compose(
            config_name="evaluate", overrides=[f"class_mappings={tmp_path / 'cm.json'}", "legend=MINE"]
        )
    assert dict(cfg.legend) == codes and cfg2.class_mappings.endswith("cm.json")
    # the inline mapping passes the strict checks and reaches the label encoder (no data here: a clear error)
    cfg.datasets = [str(tmp_path / "missing.parquet")]
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        evaluate_run(cfg)
