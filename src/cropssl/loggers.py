"""Loggers that survive a resume: the CSV log of a run is appended to, never wiped."""

from __future__ import annotations

import csv
import os

from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing ``metrics.csv``.

    On a resumed run, rows logged after the checkpoint's step are dropped first so the file holds each
    step once.
    """

    def __init__(self, log_dir: str, resume_step: int | None = None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            self.metrics_keys = sorted(reader.fieldnames or [])
            rows = list(reader)
        if self._resume_step is not None:
            rows = [
                r for r in rows if r.get("step") in (None, "") or int(float(r["step"])) < self._resume_step
            ]
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """A ``CSVLogger`` writing ``<save_dir>/metrics.csv`` that appends when a run is resumed.

    Args:
        save_dir: Directory of ``metrics.csv`` (the run directory).
        resume_step: Global step the run resumes from; rows at or after it are dropped.
        **kwargs: Passed to :class:`~pytorch_lightning.loggers.CSVLogger`.

    """

    def __init__(self, save_dir: str, resume_step: int | None = None, **kwargs: object) -> None:
        super().__init__(save_dir, name="", version="", **kwargs)  # type: ignore[arg-type]
        self._resume_step = resume_step

    @property
    @rank_zero_only
    def experiment(self) -> ExperimentWriter:
        """The appending writer."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self._resume_step)
        return self._experiment
