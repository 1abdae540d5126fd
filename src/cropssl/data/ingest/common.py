"""Shared pieces of every reader: errors, the ingest report, unit conversion and window cutting."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from cropssl.schema import BAND_INDEX, BANDS, NUM_BANDS, PixelSamples

#: No-data value of WorldCereal extractions.
NODATA = 65535

#: Bands that do not change over time (one value per sample, repeated on every timestep).
STATIC_BANDS = ("elevation", "slope")


class InputFormatError(ValueError):
    """An input file cannot be read as any of the supported formats, or its content is invalid."""


@dataclasses.dataclass
class IngestReport:
    """What an ingest did to one file (stored in the shard manifest).

    Attributes:
        format: ``"long"``, ``"wide"`` or ``"cube"``.
        path: The input path.
        n_rows: Rows (long/wide) or pixels (cube) read.
        n_samples: Samples kept.
        n_skipped_all_missing: Samples dropped because every value in their window was missing.
        n_nonfinite_values: NaN/inf raw values that were mapped to the missing mask.
        missing_bands: Bands missing for every kept sample (absent column or all no-data).
        notes: Free-text remarks (e.g. padding of short series).

    """

    format: str
    path: str
    n_rows: int
    n_samples: int
    n_skipped_all_missing: int
    n_nonfinite_values: int
    missing_bands: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)


def country_from_ref_id(ref_id: str) -> str:
    """Country code embedded in a WorldCereal ``ref_id`` (``2022_FRA_LPIS_POLY_110`` -> ``FRA``), or ""."""
    m = re.match(r"^\d{4}_([A-Z]{2,3})_", ref_id)
    return m.group(1) if m else ""


def to_physical(raw: dict[str, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Convert raw WorldCereal digital numbers to physical units and a missing mask.

    Args:
        raw: Band name (schema name, NDVI excluded) to a ``[N, L]`` float64 array of raw values; bands
            absent from the input are simply not in the dict.
        shape: ``(N, L)``.

    Returns:
        ``(x, mask, n_nonfinite)``: ``x`` ``[N, L, 17]`` float32 in physical units (0 where missing),
        ``mask`` ``[N, L, 17]`` bool (True = missing), and how many NaN/inf raw values were masked.

    """
    n, length = shape
    x = np.zeros((n, length, NUM_BANDS), np.float64)
    mask = np.ones((n, length, NUM_BANDS), bool)
    n_nonfinite = 0
    for band, values in raw.items():
        v = np.asarray(values, np.float64)
        if v.shape != (n, length):
            raise InputFormatError(f"band {band}: expected values of shape {(n, length)}, got {v.shape}")
        finite = np.isfinite(v)
        n_nonfinite += int((~finite).sum())
        valid = finite & (v != NODATA)
        v = np.where(valid, v, 0.0)
        if band in ("VV", "VH"):
            valid &= v > 0
            v = np.where(valid, 20 * np.log10(np.where(valid, v, 1.0)) - 83, 0.0)
        elif band == "temperature_2m":
            v = v / 100
        elif band == "total_precipitation":
            v = v / 100 / 1000
        i = BAND_INDEX[band]
        x[..., i] = v
        mask[..., i] = ~valid
    for band in STATIC_BANDS:  # one value per sample: the first valid one, on every timestep
        i = BAND_INDEX[band]
        has = ~mask[..., i]
        first = np.argmax(has, axis=1)
        any_valid = has.any(axis=1)
        value = x[np.arange(n), first, i]
        x[..., i] = np.where(any_valid, value, 0.0)[:, None]
        mask[..., i] = ~any_valid[:, None]
    b8, b4 = x[..., BAND_INDEX["B8"]], x[..., BAND_INDEX["B4"]]
    nd_missing = mask[..., BAND_INDEX["B8"]] | mask[..., BAND_INDEX["B4"]]
    den = b8 + b4
    nd_missing |= den == 0
    x[..., BAND_INDEX["NDVI"]] = np.where(nd_missing, 0.0, (b8 - b4) / np.where(den == 0, 1.0, den))
    mask[..., BAND_INDEX["NDVI"]] = nd_missing
    return x.astype(np.float32), mask, n_nonfinite


def window_starts(first: np.ndarray, last: np.ndarray, centre: np.ndarray, timesteps: int) -> np.ndarray:
    """Start index of each sample's window of ``timesteps`` steps.

    The window puts ``centre`` (e.g. ``valid_time``) at position ``timesteps // 2`` and is then shifted
    to stay inside the sample's observed range ``[first, last]`` when that range is long enough.
    """
    start = centre - timesteps // 2
    latest = np.maximum(first, last - timesteps + 1)
    return np.clip(start, first, latest)


def cut_windows(
    x: np.ndarray, mask: np.ndarray, start: np.ndarray, timesteps: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Gather ``[N, timesteps, 17]`` windows from ``[N, L, 17]`` series, padding beyond L as missing.

    Returns:
        ``(x, mask, n_padded)`` with the number of samples whose window needed padding.

    """
    n, length, _ = x.shape
    idx = start[:, None] + np.arange(timesteps)[None]
    inside = (idx >= 0) & (idx < length)
    safe = np.clip(idx, 0, max(length - 1, 0))
    rows = np.arange(n)[:, None]
    xw = np.where(inside[..., None], x[rows, safe], 0).astype(np.float32)
    mw = np.where(inside[..., None], mask[rows, safe], True)
    return xw, mw, int((~inside).any(axis=1).sum())


def finish(
    *,
    fmt: str,
    path: str,
    n_rows: int,
    x: np.ndarray,
    mask: np.ndarray,
    month: np.ndarray,
    latlon: np.ndarray,
    label: np.ndarray,
    year: np.ndarray,
    meta: dict[str, np.ndarray],
    n_nonfinite: int,
    notes: list[str],
) -> tuple[PixelSamples, IngestReport]:
    """Drop samples with nothing observed, build the :class:`PixelSamples` and the report."""
    keep = ~mask.all(axis=(1, 2))
    samples = PixelSamples(
        x=x,
        mask=mask,
        month=month.astype(np.int8),
        latlon=latlon.astype(np.float32),
        label=label.astype(np.int64),
        year=year.astype(np.int16),
        meta={k: np.asarray(v, dtype=object) for k, v in meta.items()},
    ).select(keep)
    missing = [b for i, b in enumerate(BANDS) if samples.mask[..., i].all()] if len(samples) else list(BANDS)
    report = IngestReport(
        format=fmt,
        path=path,
        n_rows=int(n_rows),
        n_samples=len(samples),
        n_skipped_all_missing=int((~keep).sum()),
        n_nonfinite_values=int(n_nonfinite),
        missing_bands=missing,
        notes=notes,
    )
    return samples, report
