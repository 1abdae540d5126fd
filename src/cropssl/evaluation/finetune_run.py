"""The fine-tuning loop of :func:`cropssl.evaluation.finetune.finetune`.

The frozen (linear-probe warm-up) and full phases, the epoch record and early stopping on the validation
macro F1.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.evaluation.finetune_model import FinetuneConfig, FinetuneModel, class_weights, predict_logits
from cropssl.schedules import param_groups
from cropssl.schema import Batch, PixelSamples


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


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def sample_batches(
    y: np.ndarray, batch_size: int, balanced: bool, n_classes: int, gen: torch.Generator
) -> list[Tensor]:
    """One epoch's index batches: a permutation, or class-balanced draws (no 1-sample last batch)."""
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


class FinetuneRun:
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
            for idx in sample_batches(self.y_train, cfg.batch_size, cfg.balanced_sampling, self.k, self.gen):
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
            for idx in sample_batches(self.y_train, cfg.batch_size, cfg.balanced_sampling, self.k, self.gen):
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
