"""WorldCereal **long** parquet: one row per (sample, timestep), monthly or dekadal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropssl.data.ingest.common import (
    IngestOptions,
    IngestReport,
    InputFormatError,
    choose_windows,
    count_nonfinite,
    cut_windows,
    finish,
    numeric,
    resolve_units,
    sample_meta,
    to_physical,
    window_months,
    window_summary,
)
from cropssl.data.ingest.labels import read_labels
from cropssl.data.ingest.series import month_index, regrid
from cropssl.schema import BAND_ALIASES, PixelSamples, band_for_name

#: Schema band -> column of WorldCereal long parquet files and NetCDF cubes (the first alias).
COLUMNS: dict[str, str] = {b: names[0] for b, names in BAND_ALIASES.items()}
REQUIRED = ("sample_id", "timestamp", "lat", "lon")


def band_columns(columns: list[str], where: str) -> dict[str, str]:
    """Schema band -> the column holding it (any alias); a band named by two columns is refused."""
    out: dict[str, str] = {}
    for c in columns:
        band = band_for_name(c)
        if band is None or band == "NDVI":
            continue
        if band in out:
            raise InputFormatError(f"{where}columns {out[band]!r} and {c!r} are both band {band}; keep one")
        out[band] = c
    return out


def _layout(df: pd.DataFrame, where: str) -> tuple[dict[str, str], np.ndarray, Any, np.ndarray, np.ndarray]:
    """Check the columns; the band columns, each row's sample and time index, the ids and the time axis.

    Raises:
        InputFormatError: a required or band column is missing, no rows, a bad timestamp, or two rows for
            one (sample, timestamp).

    """
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise InputFormatError(f"{where}long-format parquet needs columns {list(REQUIRED)}; missing {absent}")
    cols = band_columns(list(df.columns), where)
    if not cols:
        raise InputFormatError(f"{where}no band column found; expected some of {sorted(COLUMNS.values())}")
    if len(df) == 0:
        raise InputFormatError(f"{where}the file has no rows")
    sid, ids = pd.factorize(df["sample_id"].astype(str), sort=True)
    stamps = pd.to_datetime(df["timestamp"], errors="coerce")
    if stamps.isna().any():
        raise InputFormatError(f"{where}{int(stamps.isna().sum())} rows have no valid 'timestamp'")
    times, t = np.unique(stamps.to_numpy("datetime64[ns]"), return_inverse=True)
    if np.any(pd.DataFrame({"s": sid, "t": t}).duplicated()):
        raise InputFormatError(f"{where}several rows for the same (sample_id, timestamp); expected one")
    return cols, sid, ids, times, t


def _windows(
    one: pd.DataFrame, sid: np.ndarray, row_step: np.ndarray, n_steps: int, origin: int, k: int,
    options: IngestOptions, where: str,
) -> tuple[np.ndarray, int, str]:  # fmt: skip
    """Window starts, length and rule: centred on ``valid_time`` (else the observed range's centre)."""
    n = len(one)
    first = np.full(n, n_steps, np.int64)
    np.minimum.at(first, sid, row_step)
    last = np.zeros(n, np.int64)
    np.maximum.at(last, sid, row_step)
    centre = (first + last + 1) // 2
    has_vt = np.zeros(n, bool)
    if "valid_time" in one.columns:
        vt = pd.to_datetime(one["valid_time"], errors="coerce")
        has_vt = vt.notna().to_numpy()
        vt_idx = np.where(has_vt, (month_index(vt.fillna(pd.Timestamp("2000-01-01"))) - origin) * k, 0)
        centre = np.where(has_vt, vt_idx, centre)
    return choose_windows(
        options, origin=np.full(n, origin, np.int64), first=first, last=last, centre=centre,
        has_centre=has_vt, steps_per_month=k, where=where, common_axis=False,
    )  # fmt: skip


def read_long(path: str | Path, options: IngestOptions) -> tuple[PixelSamples, IngestReport]:
    """Read a long parquet file into sample windows.

    Every sample's rows are placed on the file's time axis (the union of its timestamps); absent rows are
    no-data. The axis is regridded to months (or kept dekadal, ``cadence="native"``); labelled samples
    (with ``valid_time``) get a window centred on it, others the centre of their observed range, unless the
    options fix the window.
    """
    where = f"{path}: "
    df = pd.read_parquet(path)
    cols, sid, ids, times, t = _layout(df, where)
    n = len(ids)
    non_numeric: dict[str, int] = {}
    values: dict[str, np.ndarray] = {}
    nodata: dict[str, np.ndarray] = {}
    for band, col in cols.items():
        grid = np.zeros((n, len(times)))
        nd = np.ones((n, len(times)), bool)  # absent rows are no-data, never values
        grid[sid, t], nd[sid, t] = numeric(df[col], col, where, options.max_non_numeric, non_numeric)
        values[band], nodata[band] = grid, nd
    units = resolve_units(list(values), {}, options.units, where)
    n_nonfinite = count_nonfinite(values, nodata)
    series = regrid(values, nodata, times, units, options.cadence, where)
    x, mask, n_bad, unit_notes = to_physical(series, units, where=where, on_invalid=options.on_out_of_range)
    k = series.steps_per_month
    step = (month_index(times) - series.origin) * k
    if k > 1:
        step = step + np.minimum((pd.DatetimeIndex(times).day.to_numpy() - 1) // 10, 2)
    one = df.groupby(sid, sort=True).first()
    origin = np.full(n, series.origin, np.int64)
    start, length, rule = _windows(one, sid, step[t], x.shape[1], series.origin, k, options, where)
    xw, mw, n_padded = cut_windows(x, mask, start, length)
    month = window_months(origin, start, length, k)
    if "year" in one.columns:
        year = one["year"].fillna(0).to_numpy(np.int64)
    else:
        year = (series.origin + (start + length - 1) // k) // 12
    label, label_report, label_notes = read_labels(
        one, column=options.label_column, label_map=options.label_map, unmapped=options.unmapped, where=where
    )
    meta = sample_meta(one, ids, path)
    notes = [*series.notes, *unit_notes]
    if n_padded:
        notes.append(
            f"{n_padded} samples observed for fewer than {length} steps of their window: padded as missing"
        )
    latlon = np.stack([one["lat"].to_numpy(np.float64), one["lon"].to_numpy(np.float64)], 1)
    return finish(
        fmt="long",
        path=path,
        n_rows=len(df),
        x=xw,
        mask=mw,
        month=month,
        latlon=latlon,
        label=label,
        year=year,
        meta=meta,
        n_nonfinite=n_nonfinite,
        notes=notes + label_notes,
        cadence=series.cadence,
        window=window_summary(origin, start, length, k, rule),
        variables=cols,
        units=units,
        n_out_of_range=n_bad,
        non_numeric=non_numeric,
        labels=label_report,
    )
