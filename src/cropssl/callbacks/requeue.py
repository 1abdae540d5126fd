"""Slurm-safe shutdown: on SIGTERM / SIGUSR1, write ``last.ckpt`` at the next step boundary and stop.

Slurm sends ``SIGUSR1`` some seconds before the time limit (``#SBATCH --signal=SIGUSR1@90``) and
``SIGTERM`` on pre-emption. The callback finishes the current optimiser step, writes the checkpoint
(atomically, through the trainer's checkpoint IO), stops training cleanly (exit code 0) and, under Slurm
with ``requeue=true``, requeues the job, whose next run resumes with ``start=resume``.
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
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Install the handlers (main thread only)."""
        for name in self.signals:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """After a completed step: if a signal arrived, checkpoint and stop."""
        if self.received is None:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(str(path))
        log.warning(
            "received %s at step %d: wrote %s, stopping",
            signal.Signals(self.received).name,
            trainer.global_step,
            path,
        )
        trainer.should_stop = True
        job = os.environ.get("SLURM_JOB_ID")
        if self.requeue and job and trainer.is_global_zero:
            subprocess.run(["scontrol", "requeue", job], check=False)
        self.received = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
