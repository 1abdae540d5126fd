"""Shared pieces of every reader: options, the ingest report, conversion to physical units, windows."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.data.ingest.errors import InputFormatError
from cropssl.data.ingest.series import CADENCES, Series, month_index
from cropssl.data.ingest.units import (
    NODATA,
    canonical_unit,
    check_range,
    convert,
    uses_nodata_sentinel,
)
from cropssl.schema import BAND_INDEX, BANDS, NUM_BANDS, PixelSamples

__all__ = [
    "NODATA",
    "IngestOptions",
    "IngestReport",
    "InputFormatError",
    "country_from_ref_id",
    "finish",
    "numeric",
    "to_physical",
]

#: Bands that do not change over time (one value per sample, repeated on every timestep).
STATIC_BANDS = ("elevation", "slope")


@dataclasses.dataclass(frozen=True)
class IngestOptions:
    """How to read an input file (``cropssl-shard`` flags; the defaults are the documented rules).

    Attributes:
        timesteps: Months per sample window.
        cadence: ``"month"`` (aggregate sub-monthly series to months) or ``"native"`` (keep dekads).
        start: First month of a fixed window (``"YYYY-MM"``), with ``end``; overrides the default rule.
        end: Last month of a fixed window (``"YYYY-MM"``).
        season_end_month: Calendar month (1-12) the window ends on: the first such month at or after a
            sample's ``valid_time``, else the last such month observed.
        label_column: Column holding the labels (default ``ewoc_code``).
        label_map: ``{value: ewoc_code}`` mapping, or a ``.json`` / ``.csv`` file of one, applied to the
            label column.
        unmapped: Label values the map does not cover: ``drop`` (unlabelled), ``other`` (the map's
            ``"other"`` entry) or ``error``.
        units: Band -> units of the stored values, overriding the file (``{"VV": "dB"}``).
        on_out_of_range: ``"error"`` (default) or ``"mask"`` for values outside a band's physical range.
        max_non_numeric: Largest share of non-numeric entries tolerated in a band column (masked, counted).
        max_T: Largest number of timesteps a sample may have (the encoder's ``max_T``).

    """

    timesteps: int = 12
    cadence: str = "month"
    start: str | None = None
    end: str | None = None
    season_end_month: int | None = None
    label_column: str | None = None
    label_map: Any = None
    unmapped: str = "drop"
    units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    on_out_of_range: str = "error"
    max_non_numeric: float = 0.01
    max_T: int = 72  # noqa: N815 (the encoder's name for it)

    def __post_init__(self) -> None:
        if self.cadence not in CADENCES:
            raise InputFormatError(f"unknown cadence {self.cadence!r}; use one of {list(CADENCES)}")
        if (self.start is None) != (self.end is None):
            raise InputFormatError("give both --start and --end (YYYY-MM), or neither")
        if self.start is not None and self.season_end_month is not None:
            raise InputFormatError("--start/--end and --season-end-month exclude each other")
        if self.start is not None:
            n = self.window_months()[1] - self.window_months()[0] + 1
            if n < 1:
                raise InputFormatError(f"--end {self.end} lies before --start {self.start}")
            object.__setattr__(self, "timesteps", n)
        if self.timesteps < 1:
            raise InputFormatError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.season_end_month is not None and not 1 <= int(self.season_end_month) <= 12:
            raise InputFormatError(f"--season-end-month must be 1-12, got {self.season_end_month}")
        if self.unmapped not in ("drop", "other", "error"):
            raise InputFormatError(
                f"unknown unmapped-label policy {self.unmapped!r}; use drop, other or error"
            )
        if self.on_out_of_range not in ("error", "mask"):
            raise InputFormatError(f"--out-of-range must be error or mask, got {self.on_out_of_range!r}")

    def window_months(self) -> tuple[int, int]:
        """``(start, end)`` absolute month indices of a fixed window."""
        out = []
        for name, value in (("start", self.start), ("end", self.end)):
            if not re.fullmatch(r"\d{4}-\d{2}", str(value)):
                raise InputFormatError(f"--{name} {value!r}: expected YYYY-MM, e.g. 2020-11")
            out.append(int(month_index([f"{value}-01"])[0]))
        return out[0], out[1]


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
        notes: Free-text remarks (padding, aggregation, derived ids, ...).
        cadence: ``"month"`` or ``"dekad"`` (steps of the written samples).
        window: The months of the sample windows: ``rule`` and ``counts`` (``"YYYY-MM..YYYY-MM"`` -> samples).
        variables: Schema band -> the file's column / variable it was read from.
        units: Schema band -> encoding of the stored values.
        n_out_of_range: Band -> values outside the physical range that were masked (``--out-of-range mask``).
        non_numeric: Column -> entries that were not numbers (masked).
        labels: How labels were read (column, map, counts).

    """

    format: str
    path: str
    n_rows: int
    n_samples: int
    n_skipped_all_missing: int
    n_nonfinite_values: int
    missing_bands: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)
    cadence: str = "month"
    window: dict[str, Any] = dataclasses.field(default_factory=dict)
    variables: dict[str, str] = dataclasses.field(default_factory=dict)
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    n_out_of_range: dict[str, int] = dataclasses.field(default_factory=dict)
    non_numeric: dict[str, int] = dataclasses.field(default_factory=dict)
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)


def sample_meta(table: Any, ids: Any, path: str | Path) -> dict[str, np.ndarray]:
    """The meta of one sample per row of ``table``: id, source, ref_id, its country, H3 cell.

    ``ref_id`` defaults to the file's stem; the H3 cell to "" when the table has none.
    """
    n = len(table)
    ref = table["ref_id"].astype(str).to_numpy() if "ref_id" in table.columns else np.full(n, Path(path).stem)
    return {
        "sample_id": np.asarray(ids, dtype=object),
        "source": np.full(n, Path(path).name, dtype=object),
        "ref_id": ref,
        "country": np.array([country_from_ref_id(r) for r in ref], dtype=object),
        "h3_l3_cell": table["h3_l3_cell"].astype(str).to_numpy()
        if "h3_l3_cell" in table.columns
        else np.full(n, ""),
    }


def country_from_ref_id(ref_id: str) -> str:
    """Country code embedded in a WorldCereal ``ref_id`` (``2022_FRA_LPIS_POLY_110`` -> ``FRA``), or ""."""
    m = re.match(r"^\d{4}_([A-Z]{2,3})_", ref_id)
    return m.group(1) if m else ""


def numeric(
    values: Any, column: str, where: str, max_share: float, counts: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 and the mask of its entries that are not numbers (counted per column).

    Non-numeric entries are no-data (not "NaN/inf" values): the report counts them under ``non_numeric``.

    Raises:
        InputFormatError: more than ``max_share`` of the non-empty entries are not numbers.

    """
    import pandas as pd

    s = pd.Series(values)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(np.float64, na_value=np.nan), np.zeros(len(s), bool)
    out = pd.to_numeric(s, errors="coerce")
    text = (out.isna() & s.notna()).to_numpy()
    bad = int(text.sum())
    if bad:
        counts[column] = bad
        share = bad / max(int(s.notna().sum()), 1)
        if share > max_share:
            examples = sorted({str(v) for v in s[out.isna() & s.notna()].head(50)})[:3]
            raise InputFormatError(
                f"{where}column {column!r} holds {bad} non-numeric entries ({share:.1%} of its values, e.g. "
                f"{examples}); a band column must hold numbers. Fix the column, or raise --max-non-numeric "
                f"(now {max_share}) to mask them"
            )
    return out.to_numpy(np.float64, na_value=np.nan), text


def resolve_units(bands: list[str], declared: Mapping[str, str], overrides: Mapping[str, str], where: str):
    """Band -> canonical encoding from the file's declared units and the user's overrides."""
    return {b: canonical_unit(b, overrides.get(b, declared.get(b, "")), where) for b in bands}


def count_nonfinite(values: dict[str, np.ndarray], nodata: dict[str, np.ndarray]) -> int:
    """NaN / inf values that are not already no-data (they will be masked)."""
    return int(sum((~np.isfinite(v) & ~nodata[b]).sum() for b, v in values.items()))


def to_physical(
    series: Series, units: Mapping[str, str], *, where: str, on_invalid: str = "error"
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Convert stored values to physical units and a missing mask, checking every band's range.

    Missing: CF / reader no-data, NaN / inf, 65535 in WorldCereal-encoded bands (and a temperature of 0,
    WorldCereal's mark of a month without AgERA5 data), and (``on_invalid="mask"``)
    values out of the physical range. Static bands keep their first valid value on every step; NDVI is
    computed from B8 and B4.

    Args:
        series: Stored values on the grid.
        units: Band -> canonical encoding.
        where: ``"path: "`` prefix of error messages.
        on_invalid: What to do with values outside the physical range (see
            :func:`cropssl.data.ingest.units.check_range`).

    Returns:
        ``(x [N, L, 17] float32, mask [N, L, 17] bool, n_out_of_range per band, notes)``.

    """
    first_band = next(iter(series.values.values()))
    n, length = first_band.shape
    x = np.zeros((n, length, NUM_BANDS), np.float64)
    mask = np.ones((n, length, NUM_BANDS), bool)
    n_bad: dict[str, int] = {}
    notes: list[str] = []
    for band, values in series.values.items():
        v = np.asarray(values, np.float64)
        if v.shape != (n, length):
            raise InputFormatError(
                f"{where}band {band}: expected values of shape {(n, length)}, got {v.shape}"
            )
        unit = units[band]
        valid = ~series.nodata[band] & np.isfinite(v)
        if uses_nodata_sentinel(band, unit):
            valid &= v != NODATA
            if band == "temperature_2m":  # 0 K: WorldCereal's AgERA5 months without meteo data
                zero = valid & (v == 0)
                if zero.any():
                    valid &= ~zero
                    notes.append(f"{int(zero.sum())} AgERA5 temperature values of 0 (no meteo data) masked")
        phys = convert(band, np.where(valid, v, 0.0), unit)
        bad = check_range(band, phys, valid, v, unit, where=where, on_invalid=on_invalid)
        if bad.any():
            n_bad[band] = int(bad.sum())
            valid &= ~bad
        i = BAND_INDEX[band]
        x[..., i] = np.where(valid, phys, 0.0)
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
    return x.astype(np.float32), mask, n_bad, notes


# ---------------------------------------------------------------------------------------------- windows
def _month_name(m: int) -> str:
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


def choose_windows(
    options: IngestOptions,
    *,
    origin: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    centre: np.ndarray,
    has_centre: np.ndarray,
    steps_per_month: int,
    where: str,
    common_axis: bool,
) -> tuple[np.ndarray, int, str]:
    """Start step of every sample's window, the window length in steps, and the rule used.

    The default rule: a window of ``timesteps`` months centred on ``centre`` (``valid_time`` / the label's
    position when known, else the middle of the observed steps), shifted to stay inside the observed range
    ``[first, last]`` when that range is long enough. ``options.start``/``end`` fix the window for every
    sample; ``options.season_end_month`` ends it on a calendar month.

    Args:
        options: The ingest options.
        origin: ``[N]`` absolute month of step 0 of each sample.
        first: ``[N]`` first observed step.
        last: ``[N]`` last observed step.
        centre: ``[N]`` step the default window is centred on.
        has_centre: ``[N]`` bool, whether ``centre`` is a label date (``valid_time``).
        steps_per_month: 1 or 3.
        where: ``"path: "`` prefix of messages.
        common_axis: The file has one time axis for all samples (a cube): a fixed window must lie inside it.

    Raises:
        InputFormatError: a window longer than ``max_T`` steps, or a fixed window outside the file's time
            range.

    """
    k = steps_per_month
    length = options.timesteps * k
    if length > options.max_T:
        raise InputFormatError(
            f"{where}{options.timesteps} months at {k} steps per month are {length} timesteps, more than the "
            f"encoder's max_T={options.max_T}; choose fewer months (--timesteps) or --cadence month"
        )
    if options.start is not None:
        lo, hi = options.window_months()
        file_lo = int((origin + first // k).min())
        file_hi = int((origin + last // k).max())
        outside = hi < file_lo or lo > file_hi or (common_axis and (lo < file_lo or hi > file_hi))
        if outside:
            raise InputFormatError(
                f"{where}the window {options.start} .. {options.end} lies outside the file's time range "
                f"{_month_name(file_lo)} .. {_month_name(file_hi)}"
            )
        return (lo - origin) * k, length, f"fixed window --start {options.start} --end {options.end}"
    if options.season_end_month is not None:
        m = int(options.season_end_month) - 1
        abs_centre = origin + centre // k
        abs_last = origin + last // k
        after_label = abs_centre + (m - abs_centre) % 12  # first month m at or after valid_time
        before_last = abs_last - (abs_last - m) % 12  # last month m observed
        end = np.where(has_centre, after_label, before_last)
        start = (end - options.timesteps + 1 - origin) * k
        return (
            start,
            length,
            (f"season ending in month {m + 1}: the first at or after valid_time, else the last observed"),
        )
    start = centre - length // 2
    latest = np.maximum(first, last - length + 1)
    rule = "centred on valid_time (labelled samples), else on the middle of the observed months"
    if common_axis:
        rule = "the middle of the cube's months"
    return np.clip(start, first, latest), length, rule


def window_summary(origin: np.ndarray, start: np.ndarray, length: int, k: int, rule: str) -> dict[str, Any]:
    """The ``window`` entry of the report: the rule and the number of samples per window."""
    lo = origin + np.floor_divide(start, k)
    hi = origin + np.floor_divide(start + length - 1, k)
    pairs, counts = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True) if len(lo) else ([], [])
    windows = {f"{_month_name(int(a))}..{_month_name(int(b))}": int(c) for (a, b), c in zip(pairs, counts)}
    out: dict[str, Any] = {"rule": rule, "timesteps": int(length), "counts": windows}
    if len(windows) == 1:
        out["start"], out["end"] = next(iter(windows)).split("..")
    return out


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


def window_months(origin: np.ndarray, start: np.ndarray, length: int, k: int) -> np.ndarray:
    """``[N, length]`` calendar month (0 = January) of every step of every window."""
    steps = start[:, None] + np.arange(length)[None]
    return ((origin[:, None] + np.floor_divide(steps, k)) % 12).astype(np.int8)


def finish(
    *,
    fmt: str,
    path: str | Path,
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
    **report_fields: Any,
) -> tuple[PixelSamples, IngestReport]:
    """Drop samples with nothing observed, build the :class:`PixelSamples` and the report.

    Raises:
        InputFormatError: A lat/lon outside WGS84 degrees (projected metres, swapped columns).

    """
    notes = [*notes, *check_latlon(latlon, path)]
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
        path=str(path),
        n_rows=int(n_rows),
        n_samples=len(samples),
        n_skipped_all_missing=int((~keep).sum()),
        n_nonfinite_values=int(n_nonfinite),
        missing_bands=missing,
        notes=notes,
        **report_fields,
    )
    return samples, report


def check_latlon(latlon: np.ndarray, path: str | Path) -> list[str]:
    """Refuse coordinates that are not WGS84 degrees; note the samples that have none.

    A missing (NaN) lat or lon is allowed: the encoder then leaves that pixel's lat/lon token out.

    Args:
        latlon: ``[N, 2]`` latitude and longitude as read.
        path: The file, for the message.

    Returns:
        The notes for the ingest report (samples without a location).

    Raises:
        InputFormatError: If a finite latitude is outside [-90, 90] or a longitude outside [-180, 180].

    """
    latlon = np.asarray(latlon, dtype=np.float64)
    lat, lon = latlon[:, 0], latlon[:, 1]
    finite = np.isfinite(latlon).all(axis=1)
    bad = finite & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        swapped = bool(((np.abs(lat[bad]) <= 180) & (np.abs(lon[bad]) <= 90)).all())
        hint = (
            "are the lat and lon columns swapped?"
            if swapped
            else "these look like projected coordinates (metres): reproject to EPSG:4326 degrees first"
        )
        raise InputFormatError(
            f"{path}: {int(bad.sum())} of {len(latlon)} samples have a location outside WGS84 degrees "
            f"(sample {i}: lat={lat[i]:g}, lon={lon[i]:g}; latitude must be in [-90, 90], longitude in "
            f"[-180, 180]); {hint}"
        )
    n_missing = int((~finite).sum())
    if not n_missing:
        return []
    return [
        f"{n_missing} samples have no location (lat/lon missing): the encoder leaves their lat/lon token "
        "out, and spatial-block splits cannot place them"
    ]
