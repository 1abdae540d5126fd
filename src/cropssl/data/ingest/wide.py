"""WorldCereal **wide** parquet: one row per sample, columns ``{SENSOR}-{BAND}-ts{t}-{res}m``.

Older and foreign wide layouts are read too: without ``sample_id`` a stable id is derived from the file
name, the location and the start date (and the report says so); labels may come from any column
(``--label-column`` / ``--label-map``, see :mod:`cropssl.data.ingest.labels`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

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
from cropssl.data.ingest.series import Series, month_index
from cropssl.schema import BANDS, PixelSamples, band_for_name

TS_COLUMN = re.compile(r"^(?P<name>.+)-ts(?P<t>\d+)(?:-(?P<res>\d+)m)?$")
STATIC_COLUMN = re.compile(r"^(?P<name>.+?)(?:-(?P<res>\d+)m)?$")
REQUIRED = ("lat", "lon", "start_date")


def is_wide(columns: list[str]) -> bool:
    """Whether the column names look like a wide WorldCereal table."""
    return any((m := TS_COLUMN.match(c)) and band_for_name(m["name"]) for c in columns)


def derive_sample_ids(df: pd.DataFrame, stem: str) -> np.ndarray:
    """Stable ids for a table without ``sample_id``: ``{stem}_{hash of lat, lon, start_date}[_k]``.

    The same row gets the same id whatever the row order; rows at the same place and date get ``_1``,
    ``_2``, ... in file order.
    """
    keys = [
        f"{float(a):.7f},{float(b):.7f},{c}"
        for a, b, c in zip(df["lat"], df["lon"], df["start_date"].astype(str))
    ]
    base = [f"{stem}_{hashlib.sha1(k.encode()).hexdigest()[:12]}" for k in keys]
    seen: dict[str, int] = {}
    out = []
    for b in base:
        k = seen.get(b, 0)
        seen[b] = k + 1
        out.append(b if k == 0 else f"{b}_{k}")
    return np.asarray(out, dtype=object)


def read_wide(path: str | Path, options: IngestOptions) -> tuple[PixelSamples, IngestReport]:
    """Read a wide parquet file into sample windows.

    ``ts0`` is the month of ``start_date``; windows are centred on ``valid_position`` when present and
    kept inside the first ``available_timesteps`` steps, unless the options fix the window. Absent ``ts``
    columns are no-data.
    """
    where = f"{path}: "
    df = pd.read_parquet(path)
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise InputFormatError(f"{where}wide-format parquet needs columns {list(REQUIRED)}; missing {absent}")
    if len(df) == 0:
        raise InputFormatError(f"{where}the file has no rows")
    by_band, static = _band_columns(df, where)
    n = len(df)
    length = max(max(ts) for ts in by_band.values()) + 1
    values, nodata, non_numeric = _grids(df, by_band, static, length, options, where)
    units = resolve_units(list(values), {}, options.units, where)
    n_nonfinite = count_nonfinite(values, nodata)
    try:
        origin = month_index(df["start_date"])
    except (ValueError, TypeError) as exc:
        raise InputFormatError(f"{where}column 'start_date' does not hold dates ({exc})") from exc
    series = Series(values, nodata, origin, 1)
    x, mask, n_bad, unit_notes = to_physical(series, units, where=where, on_invalid=options.on_out_of_range)
    start, steps, rule = _windows(df, origin, length, options, where)
    xw, mw, n_padded = cut_windows(x, mask, start, steps)
    month = window_months(origin, start, steps, 1)
    if "year" in df.columns:
        year = df["year"].fillna(0).to_numpy(np.int64)
    else:
        year = (origin + start + steps - 1) // 12
    label, label_report, label_notes = read_labels(
        df, column=options.label_column, label_map=options.label_map, unmapped=options.unmapped, where=where
    )
    notes = [*unit_notes, *label_notes]
    if "sample_id" in df.columns:
        ids = df["sample_id"].astype(str).to_numpy()
    else:
        ids = derive_sample_ids(df, Path(path).stem)
        notes.append("no sample_id column: ids derived from the file name, lat, lon and start_date")
    meta = sample_meta(df, ids, path)
    if n_padded:
        notes.append(f"{n_padded} samples observed for fewer than {steps} months: padded as missing")
    missing_cols = [b for b in BANDS if b not in values and b != "NDVI"]
    if missing_cols:
        notes.append(f"no columns for {missing_cols}")
    return finish(
        fmt="wide",
        path=path,
        n_rows=n,
        x=xw,
        mask=mw,
        month=month,
        latlon=np.stack([df["lat"].to_numpy(np.float64), df["lon"].to_numpy(np.float64)], 1),
        label=label,
        year=year,
        meta=meta,
        n_nonfinite=n_nonfinite,
        notes=notes,
        window=window_summary(origin, start, steps, 1, rule),
        variables={
            **{b: f"{sorted(ts.values())[0].rsplit('-ts', 1)[0]}-ts*" for b, ts in by_band.items()},
            **static,
        },
        units=units,
        n_out_of_range=n_bad,
        non_numeric=non_numeric,
        labels=label_report,
    )


def _grids(
    df: pd.DataFrame, by_band: dict[str, dict[int, str]], static: dict[str, str], length: int,
    options: IngestOptions, where: str,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:  # fmt: skip
    """``[n, length]`` values and no-data flags per band (statics repeated), and the non-numeric counts."""
    n = len(df)
    non_numeric: dict[str, int] = {}
    values: dict[str, np.ndarray] = {}
    nodata: dict[str, np.ndarray] = {}
    for band, ts in by_band.items():
        grid = np.zeros((n, length))
        nd = np.ones((n, length), bool)  # absent ts columns are no-data
        for t, col in ts.items():
            grid[:, t], nd[:, t] = numeric(df[col], col, where, options.max_non_numeric, non_numeric)
        values[band], nodata[band] = grid, nd
    for band, col in static.items():
        v, text = numeric(df[col], col, where, options.max_non_numeric, non_numeric)
        values[band] = np.repeat(v[:, None], length, 1)
        nodata[band] = np.repeat(text[:, None], length, 1)
    return values, nodata, non_numeric


def _windows(
    df: pd.DataFrame, origin: np.ndarray, length: int, options: IngestOptions, where: str
) -> tuple[np.ndarray, int, str]:
    """Window starts, length and rule: centred on ``valid_position`` within ``available_timesteps``."""
    n = len(df)
    first = np.zeros(n, np.int64)
    last = np.full(n, length - 1, np.int64)
    if "available_timesteps" in df.columns:
        avail = df["available_timesteps"].fillna(length).to_numpy(np.int64)
        last = np.clip(avail - 1, 0, length - 1)
    centre = (first + last + 1) // 2
    has_vp = np.zeros(n, bool)
    if "valid_position" in df.columns:
        vp = pd.to_numeric(df["valid_position"], errors="coerce")
        has_vp = vp.notna().to_numpy()
        centre = np.where(has_vp, vp.fillna(0).to_numpy(np.int64), centre)
    return choose_windows(
        options, origin=origin, first=first, last=last, centre=centre, has_centre=has_vp,
        steps_per_month=1, where=where, common_axis=False,
    )  # fmt: skip


def _band_columns(df: pd.DataFrame, where: str) -> tuple[dict[str, dict[int, str]], dict[str, str]]:
    """The ``ts`` columns of each band (band -> step -> column) and the static layers' columns."""
    by_band: dict[str, dict[int, str]] = {}
    static: dict[str, str] = {}
    for c in df.columns:
        m = TS_COLUMN.match(c)
        if m and (band := band_for_name(m["name"])) and band != "NDVI":
            if int(m["t"]) in by_band.get(band, {}):
                raise InputFormatError(
                    f"{where}columns {by_band[band][int(m['t'])]!r} and {c!r} are the same step"
                )
            by_band.setdefault(band, {})[int(m["t"])] = c
        elif (s := STATIC_COLUMN.match(c)) and band_for_name(s["name"]) in ("elevation", "slope"):
            static[band_for_name(s["name"])] = c  # type: ignore[index]
    if not by_band:
        raise InputFormatError(
            f"{where}no known band columns; expected e.g. OPTICAL-B02-ts0-10m, SAR-VV-ts0-20m"
        )
    return by_band, static
