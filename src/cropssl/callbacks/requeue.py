"""Slurm-safe shutdown: on SIGTERM / SIGUSR1, write ``last.ckpt`` at the next step boundary and stop.

Slurm sends ``SIGUSR1`` some seconds before the time limit (``#SBATCH --signal=SIGUSR1@90``) and
``SIGTERM`` on pre-emption. The callback finishes the current optimiser step, writes the checkpoint
(atomically, through the trainer's checkpoint IO), stops training cleanly (exit code 0) and, under Slurm
with ``requeue=true``, requeues the job, whose next run resumes with ``start=resume``.

It is the only handler of these signals during training: it installs itself at ``on_train_start``, after
Lightning registered its own (its SIGTERM notifier, which raises ``SIGTERMException`` mid-loop, and the
Slurm auto-requeue handler), so the behaviour does not depend on the order in which handlers were set.
Under DDP every rank checks, after every step, whether *any* rank received a signal (one ``max``
all-reduce of a scalar), so all ranks write the one checkpoint and stop at the same step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


class GracefulShutdown(Callback):
    """Checkpoint and stop on a signal.

    Args:
        dirpath: Where ``last.ckpt`` goes (the run's ``checkpoints`` directory).
        signals: Signal names to handle.
        requeue: Under Slurm (``SLURM_JOB_ID`` set), run ``scontrol requeue`` after the checkpoint.

    """

    def __init__(
        self, dirpath: str, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1"), requeue: bool = True
    ) -> None:
        self.dirpath = Path(dirpath)
        self.signals = tuple(signals)
        self.requeue = requeue
        self.received: int | None = None
        #: Step at which a signal stopped the run (None: it ran to its end).
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Install the handlers (main thread only), replacing whatever Lightning set up before."""
        for name in self.signals:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handler)

    def _any_rank_received(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        flag = torch.tensor([0.0 if self.received is None else 1.0], device=pl_module.device)
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="max")
        return bool(flag.item() > 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """After a completed step: if a signal arrived on any rank, checkpoint and stop (all ranks)."""
        if not self._any_rank_received(trainer, pl_module):
            return
        if self.received is None:  # another rank got it: stop with it
            self.received = int(signal.SIGTERM)
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(str(path))
        log.warning(
            "received %s at step %d: wrote %s, stopping",
            signal.Signals(self.received).name,
            trainer.global_step,
            path,
        )
        trainer.should_stop = True
        self.stopped_at = int(trainer.global_step)
        job = os.environ.get("SLURM_JOB_ID")
        if self.requeue and job and trainer.is_global_zero:
            subprocess.run(["scontrol", "requeue", job], check=False)
        self.received = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
