"""WorldCereal **long** parquet: one row per (sample, timestep)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cropssl.data.ingest.common import (
    IngestReport,
    InputFormatError,
    country_from_ref_id,
    cut_windows,
    finish,
    to_physical,
    window_starts,
)
from cropssl.schema import NO_LABEL, PixelSamples

#: Schema band -> column of WorldCereal long parquet files and NetCDF cubes.
COLUMNS: dict[str, str] = {
    "VV": "S1-SIGMA0-VV",
    "VH": "S1-SIGMA0-VH",
    "B2": "S2-L2A-B02",
    "B3": "S2-L2A-B03",
    "B4": "S2-L2A-B04",
    "B5": "S2-L2A-B05",
    "B6": "S2-L2A-B06",
    "B7": "S2-L2A-B07",
    "B8": "S2-L2A-B08",
    "B8A": "S2-L2A-B8A",
    "B11": "S2-L2A-B11",
    "B12": "S2-L2A-B12",
    "temperature_2m": "AGERA5-TMEAN",
    "total_precipitation": "AGERA5-PRECIP",
    "elevation": "elevation",
    "slope": "slope",
}
REQUIRED = ("sample_id", "timestamp", "lat", "lon")


def month_index(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Months since year 0 (``year * 12 + month - 1``) of dates or date strings."""
    d = pd.DatetimeIndex(pd.to_datetime(values))
    return (d.year.to_numpy() * 12 + d.month.to_numpy() - 1).astype(np.int64)


def read_long(path: str | Path, timesteps: int) -> tuple[PixelSamples, IngestReport]:
    """Read a long parquet file into windows of ``timesteps`` months.

    Every sample's rows are placed on a monthly grid; months without a row are missing. Labelled samples
    (with ``valid_time``) get a window centred on it, others the centre of their observed range.
    """
    df = pd.read_parquet(path)
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise InputFormatError(
            f"{path}: long-format parquet needs columns {list(REQUIRED)}; missing {absent}"
        )
    if not any(c in df.columns for c in COLUMNS.values()):
        raise InputFormatError(f"{path}: no band column found; expected some of {sorted(COLUMNS.values())}")
    if len(df) == 0:
        raise InputFormatError(f"{path}: the file has no rows")
    sid, ids = pd.factorize(df["sample_id"].astype(str), sort=True)
    n = len(ids)
    t_abs = month_index(df["timestamp"])
    origin = int(t_abs.min())
    t = t_abs - origin
    length = int(t.max()) + 1
    if np.any(pd.DataFrame({"s": sid, "t": t}).duplicated()):
        raise InputFormatError(
            f"{path}: several rows for the same (sample_id, month); expected one per month"
        )
    raw: dict[str, np.ndarray] = {}
    for band, col in COLUMNS.items():
        if col not in df.columns:
            continue
        grid = np.full((n, length), np.nan)
        grid[sid, t] = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        present = np.zeros((n, length), bool)
        present[sid, t] = True
        raw[band] = np.where(present, grid, float(65535))  # absent months are no-data, not NaN
    x, mask, n_nonfinite = to_physical(raw, (n, length))
    first = np.full(n, length, np.int64)
    np.minimum.at(first, sid, t)
    last = np.zeros(n, np.int64)
    np.maximum.at(last, sid, t)
    one = df.groupby(sid, sort=True).first()
    labelled = "ewoc_code" in one.columns
    label = one["ewoc_code"].fillna(NO_LABEL).to_numpy(np.int64) if labelled else np.full(n, NO_LABEL)
    centre = (first + last + 1) // 2
    if "valid_time" in one.columns:
        vt = pd.to_datetime(one["valid_time"], errors="coerce")
        has_vt = vt.notna().to_numpy()
        vt_idx = np.where(has_vt, month_index(vt.fillna(pd.Timestamp("2000-01-01"))) - origin, 0)
        centre = np.where(has_vt, vt_idx, centre)
    start = window_starts(first, last, centre, timesteps)
    xw, mw, n_padded = cut_windows(x, mask, start, timesteps)
    month = (origin + start[:, None] + np.arange(timesteps)[None]) % 12
    if "year" in one.columns:
        year = one["year"].fillna(0).to_numpy(np.int64)
    else:
        year = (origin + start + timesteps - 1) // 12
    ref = one["ref_id"].astype(str).to_numpy() if "ref_id" in one.columns else np.full(n, Path(path).stem)
    meta = {
        "sample_id": np.asarray(ids, dtype=object),
        "source": np.full(n, Path(path).name, dtype=object),
        "ref_id": ref,
        "country": np.array([country_from_ref_id(r) for r in ref], dtype=object),
        "h3_l3_cell": one["h3_l3_cell"].astype(str).to_numpy()
        if "h3_l3_cell" in one.columns
        else np.full(n, ""),
    }
    notes = (
        [f"{n_padded} samples observed for fewer than {timesteps} months: padded as missing"]
        if n_padded
        else []
    )
    latlon = np.stack([one["lat"].to_numpy(np.float64), one["lon"].to_numpy(np.float64)], 1)
    return finish(
        fmt="long",
        path=str(path),
        n_rows=len(df),
        x=xw,
        mask=mw,
        month=month,
        latlon=latlon,
        label=label,
        year=year,
        meta=meta,
        n_nonfinite=n_nonfinite,
        notes=notes,
    )
