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
import math
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.schedules import param_groups
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


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    from cropssl.evaluation.metrics import classification_metrics

    return float(classification_metrics(y, pred, [str(i) for i in range(k)])["macro_f1"])


@torch.inference_mode()
def _embed(encoder: PixelTimeSeriesEncoder, batch: Batch, batch_size: int) -> Tensor:
    was = encoder.training
    encoder.eval()
    out = [encoder(batch.select(slice(i, i + batch_size))) for i in range(0, len(batch), batch_size)]
    encoder.train(was)
    return torch.cat(out) if out else torch.zeros(0, encoder.embed_dim)


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


# ---------------------------------------------------------------------------------------------- training
def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _batches(
    y: np.ndarray, batch_size: int, balanced: bool, n_classes: int, gen: torch.Generator
) -> list[Tensor]:
    n = len(y)
    if balanced:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        w = torch.from_numpy(1.0 / counts[y])
        order = torch.multinomial(w, n, replacement=True, generator=gen)
    else:
        order = torch.randperm(n, generator=gen)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # batch norm needs two samples
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


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
        run = _Run(FinetuneModel(copy.deepcopy(encoder), k, standardize=cfg.standardize), cfg, k,
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


class _Run:
    """One fine-tuning run: the two phases, the epoch record and the best weights (early stopping)."""

    def __init__(
        self, model: FinetuneModel, cfg: FinetuneConfig, k: int, train: PixelSamples, y_train: np.ndarray,
        val: PixelSamples | None, y_val: np.ndarray | None, verbose: bool,
    ) -> None:  # fmt: skip
        self.model, self.cfg, self.k, self.verbose = model, cfg, k, verbose
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.tb = Batch.from_samples(train)
        self.vb = Batch.from_samples(val) if val is not None else None
        self.emb = _embed(model.encoder, self.tb, cfg.eval_batch_size).clone()
        self.y_train, self.y_val = y_train, y_val
        self.recalibrate_norm(self.emb)
        self.weight = torch.from_numpy(class_weights(y_train, k, cfg.class_weight)).float()
        self.yt = torch.from_numpy(y_train)
        self.yv = None if y_val is None else torch.from_numpy(y_val)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"score": (-1.0, -math.inf), "epoch": 0, "state": None}
        self.bad_epochs = 0
        self.epoch = 0

    def recalibrate_norm(self, train_emb: Tensor | None = None) -> None:
        """Eval-mode statistics of the head's norm = those of the current training embeddings."""
        if not isinstance(self.model.norm, nn.BatchNorm1d) or len(self.y_train) < 2:
            return
        if train_emb is None:
            train_emb = _embed(self.model.encoder, self.tb, self.cfg.eval_batch_size)
        self.model.norm.running_mean.copy_(train_emb.mean(0))
        self.model.norm.running_var.copy_(train_emb.var(0))

    def _val_scores(self, val_emb: Tensor | None) -> tuple[float | None, float | None]:
        """Validation macro F1 and loss (None without a validation fold)."""
        if self.vb is None:
            return None, None
        model, cfg = self.model, self.cfg
        was = model.training
        model.eval()
        with torch.inference_mode():
            logits = (
                model.classify(val_emb)
                if val_emb is not None
                else predict_logits(model, self.vb, cfg.eval_batch_size)
            )
            vloss = float(F.cross_entropy(logits, self.yv, weight=self.weight))
        model.train(was)
        return _macro_f1(self.y_val, logits.argmax(1).numpy(), self.k), vloss

    def record(
        self,
        phase: str,
        loss: float,
        lr: float,
        t0: float,
        val_emb: Tensor | None = None,
        eligible: bool = True,
    ) -> bool:
        """Record the epoch, keep the best weights; return True when patience ran out.

        "Best" is the highest validation macro F1, ties broken by the lower validation loss (on small
        validation sets the F1 often plateaus, e.g. while only the majority class is predicted).
        Epochs that are not ``eligible`` (before ``min_epochs``) are recorded only.
        """
        f1, vloss = self._val_scores(val_emb)
        self.history.append(
            {
                "epoch": self.epoch,
                "phase": phase,
                "train_loss": round(loss, 5),
                "val_loss": None if vloss is None else round(vloss, 5),
                "val_macro_f1": None if f1 is None else round(f1, 5),
                "lr": lr,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        if self.verbose:
            print(f"epoch {self.epoch} ({phase}): loss {loss:.4f} val loss {vloss} macro F1 {f1} lr {lr:.2e}")
        if not eligible:
            return False
        score = (-1.0, -math.inf) if f1 is None else (round(f1, 6), -vloss)  # type: ignore[operator]
        if f1 is None or score > self.best["score"]:
            self.best.update(score=score, epoch=self.epoch, f1=f1)
            self.best["state"] = copy.deepcopy(self.model.state_dict())
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        return self.cfg.patience > 0 and self.bad_epochs >= self.cfg.patience

    def _step(self, opt: torch.optim.Optimizer, logits: Tensor, idx: Tensor, clip: bool) -> float:
        loss = F.cross_entropy(
            logits, self.yt[idx], weight=self.weight, label_smoothing=self.cfg.label_smoothing
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip and self.cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        opt.step()
        return float(loss.detach()) * len(idx)

    def frozen_phase(self) -> bool:
        """Phase 1: a linear probe on the frozen encoder's embeddings (computed once).

        Returns whether the run stops here (patience ends the warm-up, not the fine-tuning, unless there
        is no full phase).
        """
        cfg, model = self.cfg, self.model
        val_emb = _embed(model.encoder, self.vb, cfg.eval_batch_size).clone() if self.vb is not None else None
        head_lr = cfg.head_lr if cfg.head_lr is not None else 10 * cfg.lr
        opt = torch.optim.AdamW(model.head.parameters(), lr=head_lr, weight_decay=cfg.weight_decay)
        stopped = False
        for _ in range(cfg.freeze_epochs):
            self.epoch += 1
            t0 = time.perf_counter()
            total, n_seen = 0.0, 0
            for idx in _batches(self.y_train, cfg.batch_size, cfg.balanced_sampling, self.k, self.gen):
                total += self._step(opt, model.classify(self.emb[idx]), idx, clip=False)
                n_seen += len(idx)
            if self.record("frozen", total / n_seen, head_lr, t0, val_emb):
                stopped = cfg.epochs == 0
                break
        self.bad_epochs = 0  # unfreezing starts a new phase
        if self.best["state"] is not None:
            model.load_state_dict(self.best["state"])
        return stopped

    def full_phase(self) -> bool:
        """Phase 2: everything trainable, layer-wise lr decay; returns whether patience stopped it."""
        cfg, model = self.cfg, self.model
        model.train()
        groups = param_groups(model, cfg.lr, cfg.layer_decay, cfg.weight_decay)
        opt = torch.optim.AdamW(
            [{k_: v for k_, v in g.items() if k_ != "param_names"} for g in groups], lr=cfg.lr
        )
        steps_per_epoch = math.ceil(len(self.y_train) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        step = 0
        for _ in range(cfg.epochs):
            self.epoch += 1
            t0 = time.perf_counter()
            model.train()
            total, n_seen = 0.0, 0
            for idx in _batches(self.y_train, cfg.batch_size, cfg.balanced_sampling, self.k, self.gen):
                f = _lr_factor(step, total_steps, warmup, cfg.schedule)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * g["lr_scale"] * f
                total += self._step(opt, model(self.tb.select(idx)), idx, clip=True)
                n_seen += len(idx)
                step += 1
            eligible = self.epoch - cfg.freeze_epochs >= min(max(cfg.min_epochs, 1), cfg.epochs)
            self.recalibrate_norm()
            if self.record("full", total / n_seen, cfg.lr * f, t0, eligible=eligible):
                return self.epoch < cfg.freeze_epochs + cfg.epochs
        return False


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
