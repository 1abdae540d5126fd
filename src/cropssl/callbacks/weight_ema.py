"""An exponential moving average (EMA) of the encoder's weights: what checkpoints and exports hold.

A guardrail for continued pre-training (``callbacks=ema``): the averaged weights start at the weights the
run starts from (``start=from_weights``) and follow the trained ones slowly, ``ema <- decay * ema +
(1 - decay) * weights`` after every optimiser step. After ``n`` steps the starting weights still make up
``decay ** n`` of the average (0.995: 13 % after 400 steps), so a short continued run moves the encoder
less and averages out the noise of its last steps (Polyak averaging).

Every checkpoint's ``encoder.*`` weights are the average, so ``cropssl-export``, ``cropssl-evaluate`` on a
checkpoint and ``start=from_weights`` all read it without knowing about this callback. The trained
weights themselves travel in the callback's own state and are put back when a run resumes, so a resumed
run is exactly the uninterrupted one. Training, the monitors and the method's own teacher use the trained
weights; only what is saved is averaged.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from timm.utils.model_ema import ModelEmaV3
from torch import Tensor

ENCODER_PREFIX = "encoder."


class EncoderEMA(pl.Callback):
    """Keep an EMA of ``pl_module.encoder`` and save it as the encoder.

    The average is timm's ``ModelEmaV3``, as for the EMA teachers (:mod:`cropssl.methods.teacher`).

    Args:
        decay: Weight of the running average per optimiser step, in [0, 1) (0 = no averaging).

    """

    def __init__(self, decay: float = 0.995) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.ema: ModelEmaV3 | None = None
        self.step = 0
        self._module: pl.LightningModule | None = None
        self._trainer: pl.Trainer | None = None
        self._raw: dict[str, Tensor] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remember the module whose encoder is averaged."""
        self._trainer, self._module = trainer, pl_module

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the average (fresh run) or put the trained weights back (resumed: the encoder is the EMA)."""
        encoder: torch.nn.Module = pl_module.encoder  # type: ignore[assignment]
        if self._raw is None and self.ema is not None:
            return
        self.ema = ModelEmaV3(encoder, decay=self.decay).requires_grad_(False)
        if self._raw is not None:
            encoder.load_state_dict(self._raw)
            self._raw = None
        else:
            self.step = int(trainer.global_step)

    def _update(self) -> None:
        """Fold the current weights in once per optimiser step (idempotent within a step)."""
        assert self._trainer is not None and self._module is not None
        if self.ema is None or self._trainer.global_step <= self.step:
            return
        self.ema.update(self._module.encoder)
        self.step = int(self._trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Update the average after the optimiser step."""
        self._update()

    def state_dict(self) -> dict[str, Any]:
        """The trained (not averaged) encoder weights and the step the average has reached."""
        if self.ema is None:
            return {"decay": self.decay, "step": self.step, "raw": None}
        self._update()  # a checkpoint written before this callback's batch-end hook still gets this step
        assert self._module is not None
        raw = {k: v.detach().clone() for k, v in self._module.encoder.state_dict().items()}
        return {"decay": self.decay, "step": self.step, "raw": raw}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Hold the trained weights until training starts (the checkpoint's encoder is the average)."""
        self.step = int(state_dict.get("step", 0))
        self._raw = state_dict.get("raw")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Write the averaged weights as the checkpoint's encoder."""
        if self.ema is None:
            return
        sd = checkpoint["state_dict"]
        for k, v in self.ema.module.state_dict().items():
            sd[ENCODER_PREFIX + k] = v.detach().clone()
        checkpoint["encoder_ema"] = {"decay": self.decay, "step": self.step}
