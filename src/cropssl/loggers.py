"""A CSV logger that survives a resume: the ``metrics.csv`` of a run is appended to, never wiped.

Built on Lightning's public :class:`~pytorch_lightning.loggers.Logger` base (Lightning's own ``CSVLogger``
deletes an existing file when a run starts, and only a private method of its writer decides that).
"""

from __future__ import annotations

import csv
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class ResumableCSVLogger(Logger):
    """Write ``<save_dir>/metrics.csv``, one row per logged step, appending when a run is resumed.

    On a resumed run the rows logged at or after the checkpoint's step are dropped first (they are logged
    again), so the file holds each step once: the method calls :meth:`resume_from` when Lightning restores
    the checkpoint, before anything is logged. A metric that first appears late adds a column: the file is
    rewritten with the wider header.

    Args:
        save_dir: Directory of ``metrics.csv`` (the run directory).
        flush_logs_every_n_steps: Rows kept in memory before they are written.

    """

    def __init__(self, save_dir: str, flush_logs_every_n_steps: int = 100) -> None:
        super().__init__()
        self._save_dir = str(save_dir)
        self.metrics_file_path = os.path.join(self._save_dir, "metrics.csv")
        self._flush_every = int(flush_logs_every_n_steps)
        self._keys: list[str] = []
        self._pending: list[dict[str, Any]] = []
        self._resume_step: int | None = None
        self._started = False

    def resume_from(self, step: int) -> None:
        """The run resumes at global step ``step``: rows of the file at or after it will be dropped."""
        self._resume_step = int(step)

    @property
    def name(self) -> str:
        """Empty: the run directory is the log directory."""
        return ""

    @property
    def version(self) -> str:
        """Empty: one log per run directory."""
        return ""

    @property
    def save_dir(self) -> str:
        """The run directory."""
        return self._save_dir

    @property
    def log_dir(self) -> str:
        """The run directory."""
        return self._save_dir

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's config is in ``.hydra/`` and in every checkpoint."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Buffer one row (``step`` first); write when the buffer is full."""
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        self._pending.append({"step": step, **row})
        if len(self._pending) >= self._flush_every:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        """Write the buffered rows (the whole file when a new column appears)."""
        self._start()
        if not self._pending:
            return
        new = [k for row in self._pending for k in row if k not in self._keys]
        if new:
            rows = self._read() if os.path.isfile(self.metrics_file_path) else []
            self._keys = [*self._keys, *dict.fromkeys(new)]
            self._write([*rows, *self._pending], mode="w")
        else:
            self._write(self._pending, mode="a")
        self._pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is buffered."""
        self.save()

    def _start(self) -> None:
        """Once: keep the rows of the file before ``resume_step`` (all of them when not resuming)."""
        if self._started:
            return
        self._started = True
        Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            self._keys = list(csv.DictReader(f).fieldnames or [])
        rows = self._read()
        if self._resume_step is not None:
            cut = self._resume_step
            rows = [r for r in rows if r.get("step") in (None, "") or int(float(r["step"])) < cut]
        self._write(rows, mode="w")

    def _read(self) -> list[dict[str, Any]]:
        with open(self.metrics_file_path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        with open(self.metrics_file_path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._keys)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)
