"""The fine-tuned classifier (the model side of :mod:`cropssl.evaluation.finetune`).

Its hyper-parameters, the ``encoder -> norm -> Linear`` model, class weights, the stratified validation
hold-out and prediction.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.schema import Batch, PixelSamples

ClassWeighting = Literal["none", "inverse", "inverse_sqrt"]
CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "inverse", "inverse_sqrt")

#: Encoder parameters (name prefixes) that make up the input embedding, the lowest "layer".


@dataclasses.dataclass
class FinetuneConfig:
    """Hyper-parameters of :func:`finetune`.

    Attributes:
        epochs: Largest number of epochs with the encoder unfrozen.
        freeze_epochs: Linear-probe warm-up epochs (frozen encoder) before unfreezing; 0 = none.
        batch_size: Samples per step.
        lr: Learning rate of the head (and of the top of the encoder, scaled down layer-wise).
        head_lr: Learning rate of the head during the frozen warm-up (default ``10 * lr``).
        layer_decay: Layer-wise decay factor in (0, 1]; 1 = same lr everywhere.
        weight_decay: AdamW weight decay (not applied to biases, norms and embedding tables).
        warmup_epochs: Linear lr warm-up (in epochs, fractional allowed) at the start of fine-tuning.
        schedule: ``cosine`` (to 0 at the last epoch) or ``constant`` after the warm-up.
        class_weight: Cross-entropy class weights ``none``, ``inverse`` (1 / count) or ``inverse_sqrt``.
        balanced_sampling: Draw training batches with class-balanced probabilities (with replacement).
        label_smoothing: Cross-entropy label smoothing.
        patience: Stop after this many epochs without a better validation macro F1 (0 = never stop).
        min_epochs: Epochs of the unfrozen phase before an epoch may be kept as the best or patience
            counts (capped at ``epochs``): on small validation sets the macro F1 is noisy, and a lucky
            early epoch of a barely trained model would otherwise be kept.
        val_size: Fraction of the training samples held out for early stopping when no validation set
            is given (stratified); 0 = no validation (train all epochs, keep the last weights).
        max_grad_norm: Gradient clipping norm (0 = none).
        eval_batch_size: Samples per forward pass when predicting.
        standardize: Standardise the head's input with a non-affine batch norm (see :class:`FinetuneModel`).
        seed: Seed of the head initialisation, the validation carve-out and the batch order.

    """

    epochs: int = 40
    freeze_epochs: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    head_lr: float | None = None
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    schedule: Literal["cosine", "constant"] = "cosine"
    class_weight: ClassWeighting = "inverse_sqrt"
    balanced_sampling: bool = False
    label_smoothing: float = 0.0
    patience: int = 10
    min_epochs: int = 10
    val_size: float = 0.15
    max_grad_norm: float = 1.0
    eval_batch_size: int = 1024
    standardize: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.class_weight not in CLASS_WEIGHTINGS:
            raise ValueError(f"class_weight must be one of {CLASS_WEIGHTINGS}, got {self.class_weight!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.epochs < 0 or self.freeze_epochs < 0 or self.epochs + self.freeze_epochs < 1:
            raise ValueError(
                "need epochs >= 0, freeze_epochs >= 0 and at least one epoch in all, got "
                f"epochs={self.epochs}, freeze_epochs={self.freeze_epochs}"
            )
        if not 0 <= self.val_size < 1:
            raise ValueError(f"val_size must be in [0, 1), got {self.val_size}")
        if self.min_epochs < 0 or self.patience < 0:
            raise ValueError("min_epochs and patience must be >= 0")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")


class FinetuneModel(nn.Module):
    """An encoder followed by a (standardising) linear classification head.

    With ``standardize`` the head sees the embeddings through a non-affine ``BatchNorm1d`` (as in MAE's
    linear probe): batch statistics in training, running statistics in eval mode, which :func:`finetune`
    sets to the mean / variance of the current encoder's embeddings of all training samples before every
    validation ("precise BN"): the usual running average lags behind an encoder that is being fine-tuned,
    and on embeddings that vary little between samples the stale statistics blew the validation logits
    up (a BYOL encoder's validation loss jumped between 2 and 13 while its training loss fell). Without it a
    gradient-trained head on a random or collapsed encoder hardly moves, since such embeddings vary little
    between samples (the logistic-regression probe standardises its inputs for the same reason).

    Args:
        encoder: The (pre-trained or random) encoder.
        n_classes: Number of classes ``K``.
        standardize: Put the non-affine batch norm before the linear layer.

    """

    def __init__(self, encoder: PixelTimeSeriesEncoder, n_classes: int, standardize: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.norm = nn.BatchNorm1d(encoder.embed_dim, affine=False) if standardize else nn.Identity()
        self.head = nn.Linear(encoder.embed_dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return self.head.out_features

    def classify(self, emb: Tensor) -> Tensor:
        """``[B, K]`` logits of ``[B, d]`` embeddings."""
        return self.head(self.norm(emb))

    def forward(self, batch: Batch) -> Tensor:
        """``[B, K]`` logits of a normalised batch."""
        return self.classify(self.encoder(batch))


# ---------------------------------------------------------------------------------------------- helpers
def class_weights(y: np.ndarray, n_classes: int, kind: ClassWeighting = "inverse_sqrt") -> np.ndarray:
    """Per-class loss weights ``1 / count`` or ``1 / sqrt(count)``, scaled to a mean of 1 over samples.

    Classes without a training sample get weight 0 (they never appear in the loss anyway).

    Args:
        y: ``[N]`` training class indices.
        n_classes: ``K``.
        kind: ``none``, ``inverse`` or ``inverse_sqrt``.

    Returns:
        ``[K]`` float64 weights.

    """
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    if kind == "none":
        return np.ones(n_classes)
    power = {"inverse": 1.0, "inverse_sqrt": 0.5}[kind]
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1) ** power, 0.0)
    return w * counts.sum() / max((w * counts).sum(), 1e-12)


def stratified_holdout(y: np.ndarray, frac: float, seed: int = 0) -> np.ndarray:
    """Boolean mask holding out ``round(frac * n_c)`` random samples of every class ``c`` with ``n_c >= 2``.

    Classes with a single sample stay in training. At least one sample is held out when ``frac > 0``
    and some class has two samples or more.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y), dtype=bool)
    if frac <= 0:
        return out
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < 2:
            continue
        k = min(int(np.floor(len(idx) * frac + 0.5)), len(idx) - 1)
        out[idx[:k]] = True
    if not out.any():
        counts = np.bincount(np.unique(y, return_inverse=True)[1].reshape(-1))
        big = np.unique(y)[counts >= 2]
        if len(big):
            out[rng.choice(np.flatnonzero(y == big[np.argmax(counts[counts >= 2])]))] = True
    return out


@torch.inference_mode()
def predict_logits(model: FinetuneModel, batch: Batch, batch_size: int = 1024) -> Tensor:
    """``[N, K]`` logits of a batch, in eval mode and in chunks."""
    was = model.training
    model.eval()
    out = [model(batch.select(slice(i, i + batch_size))) for i in range(0, len(batch), batch_size)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.n_classes)


def predict_proba(model: FinetuneModel, samples: PixelSamples | Batch, batch_size: int = 1024) -> np.ndarray:
    """``[N, K]`` float64 class probabilities of samples (softmax of the logits)."""
    batch = samples if isinstance(samples, Batch) else Batch.from_samples(samples)
    return torch.softmax(predict_logits(model, batch, batch_size).double(), dim=1).numpy()
