"""The thin base every SSL method shares: optimiser, step-based schedule, logging, checkpoint extras.

A method subclass implements :meth:`SSLMethod.shared_step` (views/masks -> encoder -> heads -> loss)
and nothing else that is generic. Everything that must survive a resume lives in the module's
``state_dict`` (teachers, buffers) or in the checkpoint's ``cropssl`` entry (plain containers only, so
``torch.load(weights_only=True)`` accepts the file).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from timm.optim import create_optimizer_v2
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from cropssl.schedules import LR_SCHEDULES
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class SSLMethod(pl.LightningModule):
    """Base LightningModule of all pre-training methods.

    Args:
        encoder: The pixel-timeseries encoder being pre-trained.
        optimizer: ``name`` (any timm optimiser: adamw, lars, lamb, ...), ``lr``, ``weight_decay``,
            ``layer_decay`` (< 1: the encoder's blocks towards the input get ``lr * decay^k``, a guardrail of
            continual pre-training) and extra keyword arguments for ``timm.optim.create_optimizer_v2``.
        anchor: Weight of an L2-SP penalty ``anchor * sum ||theta - theta_0||^2`` pulling the encoder
            towards the weights it started from (set by ``start=from_weights``; 0 = off). The starting
            weights are buffers of the state dict, so a resumed run keeps its anchor.
        schedule: ``name`` (cosine | wsd | constant), ``warmup_steps``, ``total_steps`` (None = the
            trainer's estimate), and schedule-specific keywords (``final_ratio``, ``decay_fraction``).

    """

    method_name: ClassVar[str] = "base"
    #: Views per pixel the method's loss needs (0 = the method makes no views, e.g. masked modelling).
    min_views: ClassVar[int] = 0

    def __init__(
        self,
        encoder: nn.Module,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        views: ViewGenerator | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.anchor_weight = float(anchor)
        if self.anchor_weight < 0:
            raise ValueError(f"anchor must be >= 0, got {anchor}")
        if self.min_views and (views is None or views.n_global < self.min_views):
            got = 0 if views is None else views.n_global
            raise ValueError(
                f"{self.method_name} needs {self.min_views} global views per pixel, the augment config "
                f"makes {got}: use augment=default (2 views) or set augment.n_global={self.min_views}"
            )
        self.views = views
        self.optimizer_cfg = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, **dict(optimizer or {})}
        self.schedule_cfg = {"name": "cosine", "warmup_steps": 0, "total_steps": None, **dict(schedule or {})}
        if self.schedule_cfg["name"] not in LR_SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule_cfg['name']!r}; choose from {list(LR_SCHEDULES)}"
            )
        #: Plain-dict extras stored in every checkpoint under ``checkpoint["cropssl"]``.
        self.checkpoint_extras: dict[str, Any] = {}
        #: Global step of the checkpoint this run resumed from (set when Lightning restores it).
        self.resumed_step: int | None = None
        #: File name of the checkpoint a resumed run starts from, for the lineage (set by the training run).
        self.resume_checkpoint: str | None = None
        #: The method's own random generator (masks, views); its state is checkpointed so a resumed run
        #: draws exactly the masks the uninterrupted run would have drawn.
        self.rng = torch.Generator().manual_seed(0)

    def set_seed(self, seed: int) -> None:
        """Seed the method's generator (views and masks)."""
        self._seed = int(seed)
        self.rng.manual_seed(self._seed)

    def setup(self, stage: str) -> None:
        """Under DDP, give every rank its own view / mask stream (``seed + global_rank``).

        Runs before a checkpoint is restored, so a resumed run still gets the generator state it saved.
        """
        if self._trainer is not None and self.trainer.world_size > 1:
            self.rng.manual_seed(getattr(self, "_seed", 0) + int(self.trainer.global_rank))

    # ---- the one thing a method must implement -------------------------------------------------
    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the loss of one batch. Returns the loss and extra scalars to log."""
        raise NotImplementedError

    def make_views(self, batch: Batch) -> list[Batch]:
        """The augmented views of a batch (drawn from the method's checkpointed generator)."""
        assert self.views is not None
        return self.views(batch, generator=self.rng)

    def encode_views(self, views: list[Batch]) -> list[Tensor]:
        """Pooled embeddings of several views in one encoder pass per sequence length."""
        return encode_views(self.encoder, views)

    # ---- Lightning hooks ---------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One optimisation step on a batch."""
        loss, logs = self.shared_step(batch)
        if self.anchor_weight > 0 and self.has_anchor:
            penalty = self.anchor_penalty()
            logs = {**logs, "anchor": penalty.detach()}
            loss = loss + self.anchor_weight * penalty
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.global_step}: lower the learning rate or check "
                "the input data for NaN/inf (the ingest masks them; custom data may not)"
            )
        bs = len(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation loss."""
        loss, _ = self.shared_step(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)

    def forward(self, batch: Batch) -> Tensor:
        """Pooled embeddings of the (student) encoder."""
        return self.encoder(batch)

    def on_train_epoch_start(self) -> None:
        """A new epoch: new shard order and shuffling (deterministic)."""
        stream = getattr(getattr(self.trainer, "datamodule", None), "train_stream", None)
        if stream is not None:
            stream.set_epoch(self.current_epoch)

    def total_steps(self) -> int:
        """Length of the learning-rate schedule in optimiser steps."""
        total = self.schedule_cfg.get("total_steps")
        if total:
            return int(total)
        if self._trainer is not None:
            est = self.trainer.estimated_stepping_batches
            if est != float("inf"):
                return int(est)
        raise ValueError("cannot infer the schedule length: set schedule.total_steps or trainer.max_steps")

    # ---- continual pre-training guardrail: L2-SP towards the starting weights -------------------------
    _ANCHOR = "anchor__"

    def set_anchor(self) -> None:
        """Remember the encoder's current weights as the anchor of the L2-SP penalty (buffers)."""
        for name, p in self.encoder.named_parameters():
            self.register_buffer(self._ANCHOR + name.replace(".", "__"), p.detach().clone())

    @property
    def has_anchor(self) -> bool:
        """Whether starting weights were set (:meth:`set_anchor`)."""
        return any(n.startswith(self._ANCHOR) for n, _ in self.named_buffers(recurse=False))

    def anchor_penalty(self) -> Tensor:
        """``sum ||theta - theta_0||^2`` over the encoder's parameters."""
        anchors = dict(self.named_buffers(recurse=False))
        terms = [
            ((p - anchors[self._ANCHOR + n.replace(".", "__")]) ** 2).sum()
            for n, p in self.encoder.named_parameters()
        ]
        return torch.stack(terms).sum()

    def configure_optimizers(self) -> dict[str, Any]:
        """A timm optimiser (no weight decay on norms/biases/embeddings) and a step-based LR schedule.

        With ``optimizer.layer_decay < 1`` the parameter groups get layer-wise learning rates (the
        schedule multiplies every group's own rate).
        """
        cfg = dict(self.optimizer_cfg)
        decay = float(cfg.pop("layer_decay", 1.0))
        name, lr, wd = cfg.pop("name"), cfg.pop("lr"), cfg.pop("weight_decay")
        if decay < 1.0:
            from cropssl.schedules import param_groups

            groups = [
                {k: g[k] for k in ("params", "lr", "weight_decay")} for g in param_groups(self, lr, decay, wd)
            ]
            opt = create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=wd, **cfg)
        else:
            opt = create_optimizer_v2(self, opt=name, lr=lr, weight_decay=wd, **cfg)
        sched_cfg = dict(self.schedule_cfg)
        fn = LR_SCHEDULES[sched_cfg.pop("name")]
        sched_cfg.pop("total_steps", None)
        lam = functools.partial(fn, total_steps=self.total_steps(), **sched_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": LambdaLR(opt, lam), "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what export and lineage need, as plain containers."""
        extras = dict(self.checkpoint_extras)
        lineage = [dict(r) for r in extras.pop("lineage", [])]
        if lineage:
            lineage[-1]["steps"] = int(self.global_step)
        checkpoint["cropssl"] = {
            "method": self.method_name,
            "encoder_config": dict(getattr(self.encoder, "config", {})),
            "lineage": lineage,
            "rng_state": self.rng.get_state(),
            **extras,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume: the generator, the anchor, the lineage, the loggers' step, from Lightning's checkpoint.

        The L2-SP anchor's buffers are created before the weights load; the lineage the run started with
        is kept and the resume recorded in it; the loggers are told the step (a CSV log drops the rows
        logged after it: they are logged again).

        This is the one read of the checkpoint on resume (Lightning's).
        """
        if any(k.startswith(self._ANCHOR) for k in checkpoint.get("state_dict", {})) and not self.has_anchor:
            self.set_anchor()
        extras = checkpoint.get("cropssl", {})
        if extras.get("rng_state") is not None:
            self.rng.set_state(extras["rng_state"])
        self.resumed_step = step = int(checkpoint.get("global_step", 0))
        lineage = [dict(r) for r in extras.get("lineage") or self.checkpoint_extras.get("lineage", [])]
        if lineage:
            resume = {"at": datetime.now().isoformat(timespec="seconds"), "from_step": step,
                      "checkpoint": self.resume_checkpoint}  # fmt: skip
            lineage[-1]["resumes"] = [*lineage[-1].get("resumes", []), resume]
        self.checkpoint_extras["lineage"] = lineage
        for logger in self.loggers:
            if hasattr(logger, "resume_from"):
                logger.resume_from(step)


def encode_views(encoder: nn.Module, views: list[Batch]) -> list[Tensor]:
    """Embed views, batching together those of the same length (one forward pass each)."""
    out: list[Tensor | None] = [None] * len(views)
    by_len: dict[int, list[int]] = {}
    for i, v in enumerate(views):
        by_len.setdefault(int(v.x.shape[1]), []).append(i)
    for idx in by_len.values():
        z = encoder(Batch.concat([views[i] for i in idx]))
        for i, chunk in zip(idx, z.chunk(len(idx)), strict=True):
            out[i] = chunk
    return out  # type: ignore[return-value]
