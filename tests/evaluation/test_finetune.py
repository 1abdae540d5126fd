"""Full fine-tuning: layer-wise lr decay, class weights, seeding, early stopping, freeze-then-unfreeze, and
that fine-tuning beats a frozen random encoder on real labelled data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from cropssl.evaluation.finetune import (
    FinetuneConfig,
    FinetuneModel,
    class_weights,
    finetune,
    predict_proba,
    scratch_encoder,
    stratified_holdout,
    train_from_scratch,
)
from cropssl.evaluation.finetune_run import sample_batches
from cropssl.evaluation.labels import encode_labels
from cropssl.evaluation.metrics import classification_metrics
from cropssl.evaluation.probes import fit_predict
from cropssl.evaluation.splits import random_split
from cropssl.schedules import layer_id, param_groups
from cropssl.schema import Batch
from tests.conftest import make_samples
from tests.evaluation._evalhelpers import TINY_CONFIG, tiny_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


def _labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, n)


# ------------------------------------------------------------------------------------------ lr groups
def test_layer_wise_lr_decay_gives_expected_group_lrs():
    enc = scratch_encoder({**TINY_CONFIG, "depth": 3}, seed=0)
    model = FinetuneModel(enc, n_classes=4)
    lr, decay, wd = 1e-3, 0.5, 0.05
    groups = param_groups(model, lr, decay, wd)
    by_name = {}
    for g in groups:
        for name in g["param_names"]:
            assert name not in by_name, f"{name} in two groups"
            by_name[name] = g
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(by_name) == trainable
    # depth 3: embeddings = layer 0 -> lr * 0.5^4; blocks.i -> lr * 0.5^(3 - i); final norm / head -> lr
    expected = {
        "encoder.eo_patch_embed.S1.weight": lr * decay**4,
        "encoder.latlon_embed.weight": lr * decay**4,
        "encoder.dw_embed.weight": lr * decay**4,
        "encoder.channel_embed.weight": lr * decay**4,
        "encoder.blocks.0.attn.qkv.weight": lr * decay**3,
        "encoder.blocks.1.mlp.fc1.weight": lr * decay**2,
        "encoder.blocks.2.norm1.weight": lr * decay**1,
        "encoder.norm.weight": lr,
        "head.weight": lr,
        "head.bias": lr,
    }
    for name, want in expected.items():
        assert by_name[name]["lr"] == pytest.approx(want), name
    # lower layers never get more than higher ones
    lrs = sorted((layer_id(n, 3), g["lr"]) for n, g in by_name.items())
    assert all(a[1] <= b[1] + 1e-15 for a, b in itertools.pairwise(lrs))
    # no weight decay on biases, norms and embedding tables; decay on matrices
    assert by_name["encoder.blocks.0.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["encoder.blocks.2.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["encoder.channel_embed.weight"]["weight_decay"] == 0.0
    assert by_name["encoder.blocks.0.attn.qkv.weight"]["weight_decay"] == wd
    assert by_name["head.weight"]["weight_decay"] == wd


def test_layer_decay_one_is_uniform_and_frozen_params_are_left_out():
    model = FinetuneModel(scratch_encoder(TINY_CONFIG), 3)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    groups = param_groups(model, 2e-3, 1.0, 0.0)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == ["head.bias", "head.weight"]
    model = FinetuneModel(scratch_encoder(TINY_CONFIG), 3)
    assert {g["lr"] for g in param_groups(model, 2e-3, 1.0, 0.0)} == {2e-3}


# ------------------------------------------------------------------------------------------ helpers
def test_class_weights_against_hand_computation():
    y = np.array([0] * 8 + [1] * 2 + [3] * 1)
    w = class_weights(y, 4, "inverse")
    raw = np.array([1 / 8, 1 / 2, 0.0, 1.0])
    np.testing.assert_allclose(w, raw * 11 / (raw * [8, 2, 0, 1]).sum())
    assert (w * [8, 2, 0, 1]).sum() == pytest.approx(11)  # mean weight over samples is 1
    ws = class_weights(y, 4, "inverse_sqrt")
    raw = np.array([8**-0.5, 2**-0.5, 0.0, 1.0])
    np.testing.assert_allclose(ws, raw * 11 / (raw * [8, 2, 0, 1]).sum())
    np.testing.assert_array_equal(class_weights(y, 4, "none"), np.ones(4))


def test_stratified_holdout_keeps_every_class_in_train():
    y = np.array([0] * 20 + [1] * 10 + [2] * 1)
    hold = stratified_holdout(y, 0.2, seed=1)
    assert hold.sum() == 4 + 2
    assert set(y[~hold]) == {0, 1, 2}
    assert (stratified_holdout(y, 0.2, seed=1) == hold).all()


def test_balanced_sampling_draws_classes_evenly():
    y = np.array([0] * 90 + [1] * 10)
    gen = torch.Generator().manual_seed(0)
    idx = torch.cat([torch.cat(sample_batches(y, 16, True, 2, gen)) for _ in range(20)]).numpy()
    frac = (y[idx] == 1).mean()
    assert 0.4 < frac < 0.6
    plain = torch.cat(sample_batches(y, 16, False, 2, gen)).numpy()
    assert sorted(plain.tolist()) == list(range(100))  # a permutation without balancing
    chunks = sample_batches(np.zeros(33, int), 16, False, 1, gen)
    assert [len(c) for c in chunks] == [16, 17]  # no batch of one (batch norm needs two)


def test_config_validation():
    with pytest.raises(ValueError, match="class_weight"):
        FinetuneConfig(class_weight="sqrt")
    with pytest.raises(ValueError, match="layer_decay"):
        FinetuneConfig(layer_decay=0)
    with pytest.raises(ValueError, match="at least one epoch"):
        FinetuneConfig(epochs=0, freeze_epochs=0)


# ------------------------------------------------------------------------------------------ training
def test_seeded_and_leaves_caller_encoder_and_global_rng_untouched():
    s = make_samples(80, seed=1)
    y = _labels(80)
    enc = tiny_encoder(0)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(epochs=2, batch_size=16, patience=0, seed=3)
    torch.manual_seed(123)
    a = finetune(enc, s.select(slice(0, 60)), y[:60], s.select(slice(60, None)), n_classes=3, config=cfg)
    after_rng = torch.rand(1)
    torch.manual_seed(123)
    expected_rng = torch.rand(1)
    b = finetune(enc, s.select(slice(0, 60)), y[:60], s.select(slice(60, None)), n_classes=3, config=cfg)
    assert torch.equal(after_rng, expected_rng)
    np.testing.assert_array_equal(a.proba, b.proba)
    assert a.proba.shape == (20, 3)
    np.testing.assert_allclose(a.proba.sum(1), 1, atol=1e-6)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not enc.training
    # the fitted model predicts what the result says
    np.testing.assert_allclose(predict_proba(a.model, s.select(slice(60, None))), a.proba, atol=1e-6)
    c = finetune(
        enc,
        s.select(slice(0, 60)),
        y[:60],
        s.select(slice(60, None)),
        n_classes=3,
        config={**vars(cfg), "seed": 4},
    )
    assert not np.array_equal(a.proba, c.proba)


def test_early_stopping_keeps_best_validation_epoch():
    s = make_samples(120, seed=2)
    y = _labels(120, seed=2)
    val, yv = s.select(slice(90, None)), y[90:]
    cfg = FinetuneConfig(
        epochs=12, batch_size=16, patience=2, min_epochs=1, lr=5e-3, schedule="constant", warmup_epochs=0
    )
    r = finetune(
        tiny_encoder(1), s.select(slice(0, 90)), y[:90], val, n_classes=3, val=val, y_val=yv, config=cfg
    )
    f1s = [h["val_macro_f1"] for h in r.history]
    assert r.n_val == 30 and r.n_train == 90
    assert r.best_val_macro_f1 == pytest.approx(max(f1s), abs=1e-5)
    assert r.history[r.best_epoch - 1]["val_macro_f1"] == pytest.approx(max(f1s), abs=1e-5)
    # the kept weights are the best epoch's: re-scoring val gives its macro F1
    got = classification_metrics(yv, r.pred, ["a", "b", "c"])["macro_f1"]
    assert got == pytest.approx(r.best_val_macro_f1, abs=1e-5)
    if r.stopped_early:
        assert len(r.history) - r.best_epoch >= cfg.patience
        assert len(r.history) < cfg.epochs


def test_head_norm_uses_the_statistics_of_the_kept_encoder_on_the_training_set():
    """Precise BN: the eval-mode statistics are the kept encoder's train-embedding mean / variance (not a
    running average lagging behind the fine-tuning), so evaluating the training set in eval mode
    standardises it exactly."""
    s = make_samples(96, seed=4)
    y = _labels(96, seed=4)
    train, yt, val, yv = s.select(slice(0, 72)), y[:72], s.select(slice(72, None)), y[72:]
    cfg = FinetuneConfig(epochs=4, batch_size=16, patience=0, min_epochs=1, lr=5e-3, warmup_epochs=0)
    r = finetune(tiny_encoder(3), train, yt, val, n_classes=3, val=val, y_val=yv, config=cfg)
    model = r.model.eval()
    with torch.no_grad():
        emb = model.encoder(Batch.from_samples(train))
        standardised = model.norm(emb)
    torch.testing.assert_close(model.norm.running_mean, emb.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.norm.running_var, emb.var(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(emb.shape[1]), atol=1e-4, rtol=0)
    assert r.best_epoch >= 1  # the kept weights are a fine-tuned epoch's, not the initial encoder's


def test_min_epochs_delays_selection_and_stopping():
    s = make_samples(80, seed=5)
    y = _labels(80, seed=5)
    val, yv = s.select(slice(60, None)), y[60:]
    cfg = FinetuneConfig(epochs=7, batch_size=16, patience=1, min_epochs=4, lr=5e-3)
    r = finetune(
        tiny_encoder(3), s.select(slice(0, 60)), y[:60], None, n_classes=3, val=val, y_val=yv, config=cfg
    )
    assert r.best_epoch >= 4
    assert len(r.history) >= 5  # patience only counts from epoch 4 on
    eligible = [h["val_macro_f1"] for h in r.history[3:]]
    assert r.best_val_macro_f1 == pytest.approx(max(eligible), abs=1e-5)


def test_freeze_then_unfreeze_phases():
    s = make_samples(64, seed=3)
    y = _labels(64, seed=3)
    enc = tiny_encoder(2)
    probe_only = finetune(
        enc, s, y, None, n_classes=3, config=FinetuneConfig(epochs=0, freeze_epochs=3, patience=0, val_size=0)
    )
    assert [h["phase"] for h in probe_only.history] == ["frozen"] * 3
    for k, v in enc.state_dict().items():  # encoder untouched by the frozen phase
        assert torch.equal(probe_only.model.encoder.state_dict()[k], v), k
    assert not np.allclose(probe_only.model.head.weight.detach().numpy(), 0, atol=1e-3)
    both = finetune(
        enc, s, y, None, n_classes=3, config=FinetuneConfig(epochs=2, freeze_epochs=3, patience=0, val_size=0)
    )
    assert [h["phase"] for h in both.history] == ["frozen"] * 3 + ["full"] * 2
    changed = [
        k for k, v in enc.state_dict().items() if not torch.equal(both.model.encoder.state_dict()[k], v)
    ]
    assert changed, "the encoder must be trained after unfreezing"


def test_scratch_baseline_uses_a_random_encoder_of_the_given_architecture():
    s = make_samples(48, seed=4)
    y = _labels(48, seed=4)
    r = train_from_scratch(TINY_CONFIG, s, y, s, config=FinetuneConfig(epochs=1, layer_decay=0.5, patience=0))
    assert r.model.encoder.config == scratch_encoder(TINY_CONFIG).config
    assert r.config.layer_decay == 1.0 and r.config.freeze_epochs == 0
    assert r.proba.shape == (48, 3)


def test_rejects_bad_labels():
    s = make_samples(10)
    with pytest.raises(ValueError, match="y_train"):
        finetune(tiny_encoder(), s, np.zeros(9, int))
    with pytest.raises(ValueError, match=">= 0"):
        finetune(tiny_encoder(), s, np.full(10, -1))
    with pytest.raises(ValueError, match="out of range"):
        finetune(tiny_encoder(), s, np.full(10, 3), n_classes=2)


# ------------------------------------------------------------------------------------------ real data
def test_finetuning_beats_a_frozen_random_encoder_on_real_data(france):
    """France LANDCOVER10 (grasslands / permanent crops / other, 429 parcels): fine-tuning a tiny random
    encoder end to end beats both a linear head and scikit-learn's logistic regression on the same frozen
    random encoder."""
    lab = encode_labels(france, "LANDCOVER10", min_count=100)
    s, y = france.select(lab.keep), lab.y[lab.keep]
    assert len(lab.classes) == 3 and len(s) > 400
    sp = random_split(s, 0.3, 0.0, labels=y, seed=0)
    tr, te = sp.fold == "train", sp.fold == "test"
    enc = scratch_encoder(dict(TINY_CONFIG, max_T=72), seed=0).eval()
    k = len(lab.classes)

    def f1(pred: np.ndarray) -> float:
        return classification_metrics(y[te], pred, lab.classes)["macro_f1"]

    with torch.inference_mode():
        emb = enc(Batch.from_samples(s)).numpy()
    with threadpool_limits(1):
        pred, _ = fit_predict("logreg", emb[tr], y[tr], emb[te], n_classes=k)
    frozen_logreg = f1(pred)
    probe = finetune(
        enc,
        s.select(tr),
        y[tr],
        s.select(te),
        n_classes=k,
        config=FinetuneConfig(epochs=0, freeze_epochs=40, head_lr=1e-2, patience=0, val_size=0),
    )
    full = finetune(
        enc,
        s.select(tr),
        y[tr],
        s.select(te),
        n_classes=k,
        config=FinetuneConfig(epochs=40, lr=2e-3, layer_decay=1.0, patience=0, val_size=0),
    )
    frozen_head, tuned = f1(probe.pred), f1(full.pred)
    assert tuned > frozen_head + 0.05, (tuned, frozen_head)
    assert tuned > frozen_logreg + 0.05, (tuned, frozen_logreg)
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
