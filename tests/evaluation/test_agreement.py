"""Map agreement against scikit-learn's confusion matrix / kappa and a hand-computed IoU."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from cropssl.evaluation.agreement import UNMATCHED, map_agreement, parse_reference_classes


def test_map_agreement_matches_sklearn_and_excludes_nodata():
    rng = np.random.default_rng(0)
    classes = ["maize", "other", "wheat"]
    pred = rng.integers(0, 3, (40, 30))
    pred[0, :5] = -1  # prediction no-data
    truth = np.where(rng.random(pred.shape) < 0.7, np.clip(pred, 0, 2), rng.integers(0, 3, pred.shape))
    codes = np.array([100, 0, 200])[truth]
    codes[5, :7] = 255  # reference no-data, not in the mapping
    mapping = {100: "maize", 0: "other", 200: "wheat"}
    got = map_agreement(pred, classes, codes, mapping)
    use = (codes != 255) & (pred >= 0)
    ref_names = np.array([mapping[c] for c in codes[use]])
    pred_names = np.array(classes)[pred[use]]
    labels = ["maize", "other", "wheat"]
    cm = confusion_matrix(ref_names, pred_names, labels=labels)
    assert got["confusion_matrix"] == cm.tolist() and got["n_compared"] == use.sum()
    assert got["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert got["kappa"] == pytest.approx(cohen_kappa_score(ref_names, pred_names))
    for i, c in enumerate(labels):
        tp = cm[i, i]
        assert got["iou"][c] == pytest.approx(tp / (cm[i].sum() + cm[:, i].sum() - tp))
        assert got["area_share"][c]["reference"] == pytest.approx(cm[i].sum() / cm.sum())
    assert got["n_excluded_reference"] == {"255": 7} and got["n_nodata_prediction"] == 5


def test_predicted_classes_outside_the_reference_legend():
    pred = np.array([[0, 1, 2, 2]])
    classes = ["temporary_crops", "grasslands", "trees"]
    ref = np.array([[100, 0, 0, 100]])
    with_other = map_agreement(pred, classes, ref, {100: "temporary_crops", 0: "other"})
    assert with_other["labels"] == ["other", "temporary_crops"]
    assert with_other["overall_accuracy"] == pytest.approx(0.75)  # grasslands / trees count as other
    without = map_agreement(pred, classes, ref, {100: "temporary_crops", 0: "grass"})
    assert UNMATCHED in without["columns"] and without["overall_accuracy"] == pytest.approx(0.25)
    assert parse_reference_classes("100=temporary_crops, 0=other") == {100: "temporary_crops", 0: "other"}
    with pytest.raises(ValueError, match="CODE=NAME"):
        parse_reference_classes("100")
