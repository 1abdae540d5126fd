"""The resumable CSV log: rows appended, late columns widen the file, a resume drops the re-logged steps."""

from __future__ import annotations

import pandas as pd

from cropssl.loggers import ResumableCSVLogger


def test_rows_late_columns_and_resume(tmp_path):
    log = ResumableCSVLogger(str(tmp_path), flush_logs_every_n_steps=2)
    for step in range(5):
        log.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    log.log_metrics({"monitor/knn_f1": 0.5}, step=4)  # a column that appears late
    log.finalize("success")
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert list(df["step"]) == [0, 1, 2, 3, 4, 4]
    assert df["train/loss"].iloc[2] == 1 / 3 and df["monitor/knn_f1"].iloc[-1] == 0.5
    assert df["monitor/knn_f1"].iloc[:5].isna().all()
    # a resumed run from step 3: steps 3 and 4 are logged again, once
    log = ResumableCSVLogger(str(tmp_path))
    log.resume_from(3)
    for step in (3, 4):
        log.log_metrics({"train/loss": 0.0}, step=step)
    log.finalize("success")
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert list(df["step"]) == [0, 1, 2, 3, 4] and list(df["train/loss"].iloc[3:]) == [0.0, 0.0]
    # a fresh logger in a directory with a log (no resume) appends, losing nothing
    log = ResumableCSVLogger(str(tmp_path))
    log.log_metrics({"train/loss": 9.0}, step=5)
    log.save()
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == [0, 1, 2, 3, 4, 5]
