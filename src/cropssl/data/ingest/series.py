"""Pixel series on a regular time grid: monthly aggregation of sub-monthly data, or the native cadence.

Readers put every observation on the file's own time axis (``times`` ``[L]``, shared by all samples; an
absent observation is no-data). :func:`regrid` then builds the grid the encoder sees:

* ``cadence="month"`` (default): one step per calendar month. Several observations of a month (dekadal,
  10-day extractions: three per month) are averaged over the *valid* ones -- Sentinel-1 in linear power,
  not in dB or digital numbers; precipitation, a total over its period, is summed (the mean of the valid
  sub-steps times the number of sub-steps of a month, so a missing dekad does not lower the monthly sum);
* ``cadence="native"``: keep the file's cadence -- monthly, or dekadal (slot = ``min((day - 1) // 10, 2)``,
  three steps per month). The calendar month of every step is recorded.

Months with no observation at all are no-data steps (never filled).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cropssl.data.ingest.errors import InputFormatError
from cropssl.data.ingest.units import band_kind

CADENCES = ("month", "native")


@dataclasses.dataclass
class Series:
    """Stored values of every band on a regular grid.

    Attributes:
        values: Band -> ``[N, L]`` float64 (units of the file).
        nodata: Band -> ``[N, L]`` bool.
        origin: Absolute month index (``year * 12 + month - 1``) of step 0 -- an int, or ``[N]`` per sample.
        steps_per_month: 1 (monthly) or 3 (dekadal).
        notes: What the regridding did (for the ingest report).

    """

    values: dict[str, np.ndarray]
    nodata: dict[str, np.ndarray]
    origin: int | np.ndarray
    steps_per_month: int = 1
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def cadence(self) -> str:
        """``"month"`` or ``"dekad"``."""
        return "month" if self.steps_per_month == 1 else "dekad"


def month_index(values: object) -> np.ndarray:
    """Months since year 0 (``year * 12 + month - 1``) of dates or date strings."""
    import pandas as pd

    d = pd.DatetimeIndex(pd.to_datetime(np.asarray(values).ravel()))
    return (d.year.to_numpy() * 12 + d.month.to_numpy() - 1).astype(np.int64)


def _days(times: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.DatetimeIndex(pd.to_datetime(np.asarray(times).ravel())).day.to_numpy()


def _to_linear(band: str, v: np.ndarray, unit: str) -> np.ndarray:
    """S1 values in a unit proportional to linear power (others unchanged)."""
    if band_kind(band) != "s1":
        return v
    if unit == "dn":
        return v * v  # power is proportional to DN^2 (dB = 20 log10(DN) - 83)
    if unit == "db":
        return np.power(10.0, v / 10)
    return v


def _from_linear(band: str, p: np.ndarray, unit: str) -> np.ndarray:
    if band_kind(band) != "s1":
        return p
    if unit == "dn":
        return np.sqrt(p)
    if unit == "db":
        with np.errstate(divide="ignore"):
            return 10 * np.log10(p)
    return p


def regrid(
    values: dict[str, np.ndarray],
    nodata: dict[str, np.ndarray],
    times: np.ndarray,
    units: dict[str, str],
    cadence: str = "month",
    where: str = "",
) -> Series:
    """Put ``[N, L]`` observations at ``times`` on a monthly or the native grid (see the module docstring).

    Args:
        values: Band -> ``[N, L]`` stored values.
        nodata: Band -> ``[N, L]`` no-data mask (NaN values count as no-data here too).
        times: ``[L]`` datetimes, sorted, no duplicates.
        units: Band -> canonical encoding (:func:`cropssl.data.ingest.units.canonical_unit`).
        cadence: ``"month"`` or ``"native"``.
        where: File name for error messages.

    Raises:
        InputFormatError: an unknown cadence, or a native cadence that is neither monthly nor dekadal.

    """
    if cadence not in CADENCES:
        raise InputFormatError(f"{where}unknown cadence {cadence!r}; use one of {list(CADENCES)}")
    months = month_index(times)
    if np.any(np.diff(times.astype("datetime64[ns]").astype(np.int64)) <= 0):
        raise InputFormatError(f"{where}the time axis must be strictly increasing")
    origin = int(months.min())
    n_months = int(months.max()) - origin + 1
    per_month = np.bincount(months - origin, minlength=n_months)
    sub_monthly = int(per_month.max()) > 1
    if cadence == "native" and sub_monthly:
        slot = np.minimum((_days(times) - 1) // 10, 2)
        key = (months - origin) * 3 + slot
        if np.any(np.bincount(key) > 1):
            raise InputFormatError(
                f"{where}--cadence native keeps monthly or dekadal (10-day) series; this file has "
                f"{int(per_month.max())} time steps in one month that are not one per dekad. Use "
                "--cadence month to aggregate them to months"
            )
        k, target, length = 3, key, n_months * 3
        notes = [f"native dekadal cadence kept: {len(times)} steps over {n_months} months (3 per month)"]
    else:
        k, target, length = 1, months - origin, n_months
        notes = []
        if sub_monthly:
            notes.append(
                f"{len(times)} sub-monthly steps aggregated to {n_months} months: mean of the valid "
                "observations (S1 in linear power), precipitation summed over the month"
            )
    if length == len(times) and np.array_equal(target, np.arange(length)):
        return Series(values, nodata, origin, k, notes)  # already on the grid
    n = next(iter(values.values())).shape[0]
    out_v: dict[str, np.ndarray] = {}
    out_nd: dict[str, np.ndarray] = {}
    k_month = max(1, int(per_month.max())) if sub_monthly else 1
    for band, v in values.items():
        ok = ~nodata[band] & np.isfinite(v)
        lin = np.where(ok, _to_linear(band, v, units.get(band, "")), 0.0)
        total = np.zeros((n, length))
        count = np.zeros((n, length))
        np.add.at(total.T, target, lin.T)
        np.add.at(count.T, target, ok.T.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        if band == "total_precipitation" and k == 1 and sub_monthly:
            mean = mean * k_month
        out_v[band] = np.where(count > 0, _from_linear(band, mean, units.get(band, "")), 0.0)
        out_nd[band] = count == 0
    return Series(out_v, out_nd, origin, k, notes)
