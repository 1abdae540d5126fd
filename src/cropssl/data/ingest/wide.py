"""WorldCereal **wide** parquet: one row per sample, columns ``{SENSOR}-{BAND}-ts{t}-{res}m``."""

from __future__ import annotations

import re
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
from cropssl.data.ingest.long import month_index
from cropssl.schema import NO_LABEL, PixelSamples

TS_COLUMN = re.compile(r"^(?P<sensor>[A-Za-z0-9]+)-(?P<band>.+)-ts(?P<t>\d+)-(?P<res>\d+)m$")

#: ``{SENSOR}-{BAND}`` of wide files -> schema band.
BANDS_WIDE: dict[str, str] = {
    "SAR-VV": "VV",
    "SAR-VH": "VH",
    **{f"OPTICAL-B{b}": f"B{b.lstrip('0')}" for b in ("02", "03", "04", "05", "06", "07", "08", "11", "12")},
    "OPTICAL-B8A": "B8A",
    "METEO-temperature_mean": "temperature_2m",
    "METEO-precipitation_flux": "total_precipitation",
}
STATIC_WIDE: dict[str, str] = {"DEM-alt-20m": "elevation", "DEM-slo-20m": "slope"}
REQUIRED = ("sample_id", "lat", "lon", "start_date")


def is_wide(columns: list[str]) -> bool:
    """Whether the column names look like a wide WorldCereal table."""
    return any(TS_COLUMN.match(c) for c in columns)


def read_wide(path: str | Path, timesteps: int) -> tuple[PixelSamples, IngestReport]:
    """Read a wide parquet file into windows of ``timesteps`` months.

    ``ts0`` is the month of ``start_date``; windows are centred on ``valid_position`` when present and
    kept inside the first ``available_timesteps`` steps.
    """
    df = pd.read_parquet(path)
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise InputFormatError(
            f"{path}: wide-format parquet needs columns {list(REQUIRED)}; missing {absent}"
        )
    if len(df) == 0:
        raise InputFormatError(f"{path}: the file has no rows")
    by_band: dict[str, dict[int, str]] = {}
    for c in df.columns:
        m = TS_COLUMN.match(c)
        if m and f"{m['sensor']}-{m['band']}" in BANDS_WIDE:
            by_band.setdefault(BANDS_WIDE[f"{m['sensor']}-{m['band']}"], {})[int(m["t"])] = c
    if not by_band:
        raise InputFormatError(
            f"{path}: no known band columns; expected e.g. OPTICAL-B02-ts0-10m, SAR-VV-ts0-20m"
        )
    n = len(df)
    length = max(max(ts) for ts in by_band.values()) + 1
    raw: dict[str, np.ndarray] = {}
    for band, ts in by_band.items():
        grid = np.full((n, length), 65535.0)
        for t, col in ts.items():
            grid[:, t] = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        raw[band] = grid
    for col, band in STATIC_WIDE.items():
        if col in df.columns:
            raw[band] = np.repeat(
                pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)[:, None], length, 1
            )
    x, mask, n_nonfinite = to_physical(raw, (n, length))
    first = np.zeros(n, np.int64)
    last = np.full(n, length - 1, np.int64)
    if "available_timesteps" in df.columns:
        avail = df["available_timesteps"].fillna(length).to_numpy(np.int64)
        last = np.clip(avail - 1, 0, length - 1)
    centre = (first + last + 1) // 2
    if "valid_position" in df.columns:
        vp = pd.to_numeric(df["valid_position"], errors="coerce")
        centre = np.where(vp.notna(), vp.fillna(0).to_numpy(np.int64), centre)
    start = window_starts(first, last, centre, timesteps)
    xw, mw, n_padded = cut_windows(x, mask, start, timesteps)
    origin = month_index(df["start_date"])
    month = (origin[:, None] + start[:, None] + np.arange(timesteps)[None]) % 12
    if "year" in df.columns:
        year = df["year"].fillna(0).to_numpy(np.int64)
    else:
        year = (origin + start + timesteps - 1) // 12
    label = (
        df["ewoc_code"].fillna(NO_LABEL).to_numpy(np.int64)
        if "ewoc_code" in df.columns
        else np.full(n, NO_LABEL)
    )
    ref = df["ref_id"].astype(str).to_numpy() if "ref_id" in df.columns else np.full(n, Path(path).stem)
    meta = {
        "sample_id": df["sample_id"].astype(str).to_numpy(),
        "source": np.full(n, Path(path).name, dtype=object),
        "ref_id": ref,
        "country": np.array([country_from_ref_id(r) for r in ref], dtype=object),
        "h3_l3_cell": df["h3_l3_cell"].astype(str).to_numpy()
        if "h3_l3_cell" in df.columns
        else np.full(n, ""),
    }
    notes = (
        [f"{n_padded} samples observed for fewer than {timesteps} months: padded as missing"]
        if n_padded
        else []
    )
    missing_cols = sorted(set(BANDS_WIDE.values()) - set(by_band))
    if missing_cols:
        notes.append(f"no columns for {missing_cols}")
    return finish(
        fmt="wide",
        path=str(path),
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
    )
