"""Each self-check of an evaluation fires on a constructed case and stays silent on a clean one."""

from __future__ import annotations

import numpy as np

from cropssl.evaluation.checks import overlap_of, report_checks

CLASSES = ["maize", "wheat", "other"]


def _result(name, cm, f1=0.5, ci=(0.45, 0.55)):
    return {"name": name, "macro_f1": f1, "ci": {"low": ci[0], "high": ci[1]},
            "metrics": {"confusion_matrix": cm}}  # fmt: skip


def _doc(results, counts, n_test=400, split=None):
    return {"results": results, "labels": {"classes": CLASSES}, "n_test": n_test,
            "split": {"class_counts": counts, **(split or {})}}  # fmt: skip


BALANCED = [[120, 10, 10], [10, 120, 10], [10, 10, 100]]
COUNTS = {"train": {"maize": 300, "wheat": 300, "other": 300, "(unseen class)": 0},
          "val": {"maize": 10, "wheat": 10, "other": 10, "(unseen class)": 0},
          "test": {"maize": 140, "wheat": 140, "other": 120, "(unseen class)": 0}}  # fmt: skip


def _checks(doc):
    return {c["check"]: c["message"] for c in report_checks(doc)}


def test_a_clean_evaluation_raises_no_check():
    assert _checks(_doc([_result("a", BALANCED, ci=(0.48, 0.51))], COUNTS)) == {}


def test_constant_predictor():
    constant = [[139, 1, 0], [139, 1, 0], [118, 2, 0]]
    got = _checks(_doc([_result("enc + logreg", constant, ci=(0.48, 0.51))], COUNTS))
    assert "enc + logreg predicts `maize` for 99%" in got["constant_predictor"]


def test_missing_and_unseen_classes_and_other_share():
    counts = {**COUNTS, "test": {"maize": 30, "wheat": 0, "other": 300, "(unseen class)": 7}}
    got = _checks(_doc([_result("a", BALANCED, ci=(0.48, 0.51))], counts, n_test=337))
    assert "no sample of `wheat`" in got["classes_absent_from_test"]
    assert "7 test samples" in got["unseen_test_classes"]
    assert "`other` holds 89%" in got["other_dominates"]


def test_confounded_shifts_from_group_overlaps():
    fold = np.array(["train"] * 4 + ["test"] * 2)
    cells = np.array(["a", "a", "b", "b", "c", "c"])
    years = np.array(["2017"] * 4 + ["2022"] * 2)
    overlap = overlap_of(fold, {"h3_l3_cell": cells, "year": years})
    assert overlap["h3_l3_cell"] == {"train": 2, "test": 1, "shared": 0}
    temporal = {"info": {"kind": "temporal"}, "overlap": overlap}
    got = _checks(_doc([_result("a", BALANCED, ci=(0.48, 0.51))], COUNTS, split=temporal))
    assert "year split is also a region split" in got["confounded_shift"]
    geo = {"info": {"kind": "group", "key": "h3_l3_cell"}, "overlap": overlap}
    assert "region split is also a year split" in _checks(_doc([], COUNTS, split=geo))["confounded_shift"]
    # a year split over the same places is not confounded
    shared = overlap_of(fold, {"h3_l3_cell": np.array(["a", "c", "b", "b", "c", "a"]), "year": years})
    assert "confounded_shift" not in _checks(
        _doc(
            [_result("a", BALANCED, ci=(0.48, 0.51))],
            COUNTS,
            split={"info": {"kind": "temporal"}, "overlap": shared},
        )
    )


def test_small_test_fold_names_the_resolvable_difference():
    got = _checks(_doc([_result("a", BALANCED, ci=(0.30, 0.52))], COUNTS, n_test=56))
    assert "56 test samples" in got["small_test_fold"] and "0.22 macro F1" in got["small_test_fold"]
