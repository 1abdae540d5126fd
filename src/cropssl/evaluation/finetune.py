"""Full fine-tuning of a pixel time series encoder plus a linear head (plain torch, CPU friendly).

:func:`finetune` trains ``encoder -> Linear(d, K)`` on labelled samples with

* AdamW and **layer-wise learning-rate decay** (:func:`param_groups`): the head and the final norm get
  ``lr``, the last transformer block ``lr * decay``, ..., the first block ``lr * decay^depth`` and the
  input embeddings (patch / Dynamic World / lat-lon / channel embeddings) the lowest,
  ``lr * decay^(depth + 1)``; biases, norms and embedding tables get no weight decay;
* a cosine (or constant) schedule after a one-epoch linear warm-up;
* **class balancing**: cross-entropy weighted by ``1 / count`` (``inverse``) or ``1 / sqrt(count)``
  (``inverse_sqrt``), or class-balanced sampling (``balanced_sampling=True``);
* **early stopping** on the macro F1 of a validation set (given, or carved from the training samples,
  stratified); the best epoch's weights are restored;
* an optional **linear-probe warm-up** (``freeze_epochs``): the head is first trained on the frozen
  encoder's embeddings (computed once, so these epochs are cheap), then everything is unfrozen;
* seeding (the global torch RNG is left untouched: training runs under ``torch.random.fork_rng``).

The "supervised from scratch" baseline is the same function on a randomly initialised encoder of the
same architecture (:func:`scratch_encoder`, :func:`train_from_scratch`).

The caller's encoder is never modified: it is deep-copied first.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.evaluation.finetune_model import (
    CLASS_WEIGHTINGS,
    FinetuneConfig,
    FinetuneModel,
    class_weights,
    predict_logits,
    predict_proba,
    stratified_holdout,
)
from cropssl.evaluation.finetune_run import FinetuneRun
from cropssl.schema import PixelSamples


# ---------------------------------------------------------------------------------------------- result
@dataclasses.dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: The fitted :class:`FinetuneModel` (best validation epoch), in eval mode.
        pred: ``[M]`` predicted classes of the test samples (empty if none were given).
        proba: ``[M, K]`` probabilities of the test samples.
        history: One dict per epoch: ``epoch``, ``phase`` (``frozen`` / ``full``), ``train_loss``,
            ``val_macro_f1`` (None without validation), ``lr`` (head), ``seconds``.
        best_epoch: Epoch whose weights were kept (1-based, counting frozen epochs).
        best_val_macro_f1: Its validation macro F1 (None without validation).
        stopped_early: Whether patience ran out before the last epoch.
        n_train: Training samples used (after carving validation out).
        n_val: Validation samples.
        config: The hyper-parameters.
        seconds: Wall time of training.

    """

    model: FinetuneModel
    pred: np.ndarray
    proba: np.ndarray
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_macro_f1: float | None
    stopped_early: bool
    n_train: int
    n_val: int
    config: FinetuneConfig
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (no model, no arrays)."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_macro_f1": self.best_val_macro_f1,
            "stopped_early": self.stopped_early,
            "epochs_run": len(self.history),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "seconds": round(self.seconds, 2),
            "config": dataclasses.asdict(self.config),
            "history": self.history,
        }


def finetune(
    encoder: PixelTimeSeriesEncoder,
    train: PixelSamples,
    y_train: np.ndarray,
    test: PixelSamples | None = None,
    *,
    n_classes: int | None = None,
    val: PixelSamples | None = None,
    y_val: np.ndarray | None = None,
    config: FinetuneConfig | Mapping[str, Any] | None = None,
    verbose: bool = False,
) -> FinetuneResult:
    """Fine-tune ``encoder`` plus a linear head and predict ``test``.

    Args:
        encoder: The encoder to start from (deep-copied; the caller's module is not modified).
        train: Training samples (physical units, normalised here like training batches).
        y_train: ``[N]`` class indices ``0..K-1`` of ``train``.
        test: Samples to predict after training (optional).
        n_classes: ``K`` (default ``max(y_train) + 1``).
        val: Validation samples for early stopping; default: ``config.val_size`` of ``train`` (stratified).
        y_val: ``[M]`` class indices of ``val``.
        config: A :class:`FinetuneConfig` or a mapping of its fields.
        verbose: Print one line per epoch.

    Returns:
        A :class:`FinetuneResult` with the fitted model, test predictions / probabilities and history.

    Raises:
        ValueError: on inconsistent labels or an empty training set.

    """
    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig(**dict(config or {}))
    train, y_train, val, y_val, k = _check_and_hold_out(train, y_train, val, y_val, n_classes, cfg)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        run = FinetuneRun(FinetuneModel(copy.deepcopy(encoder), k, standardize=cfg.standardize), cfg, k,
                   train, y_train, val, y_val, verbose)  # fmt: skip
        stopped = run.frozen_phase() if cfg.freeze_epochs > 0 else False
        if cfg.epochs > 0 and not stopped:
            stopped = run.full_phase()
        model = run.model
        if run.best["state"] is not None:
            model.load_state_dict(run.best["state"])
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        seconds = time.perf_counter() - start
        if test is not None and len(test):
            proba = predict_proba(model, test, cfg.eval_batch_size)
        else:
            proba = np.zeros((0, k))
    return FinetuneResult(
        model=model,
        pred=proba.argmax(axis=1).astype(np.int64),
        proba=proba,
        history=run.history,
        best_epoch=int(run.best["epoch"]),
        best_val_macro_f1=None if run.vb is None else run.best.get("f1"),
        stopped_early=stopped,
        n_train=len(y_train),
        n_val=0 if y_val is None else len(y_val),
        config=cfg,
        seconds=seconds,
    )


def _check_and_hold_out(
    train: PixelSamples, y_train: Any, val: PixelSamples | None, y_val: Any, n_classes: int | None,
    cfg: FinetuneConfig,
) -> tuple[PixelSamples, np.ndarray, PixelSamples | None, np.ndarray | None, int]:  # fmt: skip
    """Check the labels; carve a stratified validation fold out of ``train`` when none is given."""
    y_train = np.asarray(y_train, dtype=np.int64)
    if y_train.shape != (len(train),):
        raise ValueError(f"y_train has shape {y_train.shape}, expected ({len(train)},)")
    if len(y_train) == 0 or y_train.min() < 0:
        raise ValueError("y_train must be non-empty class indices >= 0 (drop excluded samples first)")
    k = int(y_train.max()) + 1 if n_classes is None else int(n_classes)
    if y_train.max() >= k:
        raise ValueError(f"class index {y_train.max()} out of range for n_classes={k}")
    if (val is None) != (y_val is None):
        raise ValueError("give both val and y_val, or neither")
    if val is None and cfg.val_size > 0:
        hold = stratified_holdout(y_train, cfg.val_size, cfg.seed)
        if hold.any():
            val, y_val = train.select(hold), y_train[hold]
            train, y_train = train.select(~hold), y_train[~hold]
    if y_val is not None:
        y_val = np.asarray(y_val, dtype=np.int64)
        if y_val.shape != (len(val),):  # type: ignore[arg-type]
            raise ValueError(f"y_val has shape {y_val.shape}, expected ({len(val)},)")  # type: ignore[arg-type]
        if len(y_val) == 0:
            val = y_val = None
    return train, y_train, val, y_val, k


def scratch_encoder(config: Mapping[str, Any] | None = None, seed: int = 0) -> PixelTimeSeriesEncoder:
    """A randomly initialised encoder (seeded; global RNG untouched) of the given architecture.

    Args:
        config: :class:`~cropssl.encoder.PixelTimeSeriesEncoder` arguments (default: Presto's architecture).
        seed: Initialisation seed.

    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PixelTimeSeriesEncoder(**dict(config or {}))


def train_from_scratch(
    encoder_config: Mapping[str, Any] | None,
    train: PixelSamples,
    y_train: np.ndarray,
    test: PixelSamples | None = None,
    *,
    config: FinetuneConfig | Mapping[str, Any] | None = None,
    **kw: Any,
) -> FinetuneResult:
    """Supervised-from-scratch baseline: :func:`finetune` on a random encoder, no layer decay or freezing.

    Args:
        encoder_config: Architecture of the random encoder (see :func:`scratch_encoder`).
        train: Training samples.
        y_train: Their class indices.
        test: Samples to predict.
        config: Fine-tuning hyper-parameters; ``layer_decay`` is forced to 1 and ``freeze_epochs`` to 0
            (a random encoder has nothing to preserve).
        **kw: Other :func:`finetune` arguments (``n_classes``, ``val``, ``y_val``, ``verbose``).

    """
    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig(**dict(config or {}))
    cfg = dataclasses.replace(cfg, layer_decay=1.0, freeze_epochs=0, epochs=max(cfg.epochs, 1))
    enc = scratch_encoder(encoder_config, seed=cfg.seed)
    return finetune(enc, train, y_train, test, config=cfg, **kw)


__all__ = [
    "CLASS_WEIGHTINGS",
    "FinetuneConfig",
    "FinetuneModel",
    "FinetuneResult",
    "class_weights",
    "finetune",
    "predict_logits",
    "predict_proba",
    "scratch_encoder",
    "stratified_holdout",
    "train_from_scratch",
]
