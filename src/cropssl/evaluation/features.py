"""Hand-crafted pixel time-series features for the CatBoost "deployed baseline", as WorldCereal uses.

Per sample (all vectorised numpy, missing values ignored):

* for each band of ``bands`` (default: the 10 S2 bands, NDVI, VV and VH): the percentiles
  ``percentiles`` (default p10, p50, p90) and the inter-quartile range p75 - p25 over the *present*
  timesteps (linear interpolation, identical to ``np.percentile`` on the present values); NaN when a
  band has no present value (CatBoost handles NaN natively);
* NDVI phenology on the NDVI curve with missing timesteps linearly interpolated (edges held at the
  nearest present value): peak value, peak timing (timestep index and calendar month, 0 = January),
  minimum, amplitude, green-up (from the last minimum before the peak to the peak) and senescence (from
  the peak to the first minimum after it) slopes per timestep (NaN when the length is 0) and lengths in
  timesteps, area under the curve (trapezoid, one unit per timestep), and the fraction of present NDVI
  values;
* elevation and slope (mean over present timesteps).

NDVI is taken from the NDVI channel, which is missing wherever B8 or B4 is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropssl.schema import BAND_INDEX, S2_BANDS, PixelSamples, ndvi_mask

DEFAULT_BANDS: tuple[str, ...] = (*S2_BANDS, "NDVI", "VV", "VH")
DEFAULT_PERCENTILES: tuple[float, ...] = (10.0, 50.0, 90.0)
PHENOLOGY_NAMES: tuple[str, ...] = (
    "ndvi_peak_value",
    "ndvi_peak_step",
    "ndvi_peak_month",
    "ndvi_min",
    "ndvi_amplitude",
    "ndvi_greenup_slope",
    "ndvi_greenup_length",
    "ndvi_senescence_slope",
    "ndvi_senescence_length",
    "ndvi_auc",
    "ndvi_valid_fraction",
)
STATIC_NAMES: tuple[str, ...] = ("elevation", "slope")


def masked_percentiles(values: np.ndarray, missing: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Percentiles along axis 1 over present values only (vectorised ``nanpercentile``).

    Uses numpy's default ``linear`` method, so for each series the result equals
    ``np.percentile(values[i][~missing[i]], q)``.

    Args:
        values: ``[N, T, ...]`` values.
        missing: Boolean mask of the same shape, True = missing.
        q: Percentiles in [0, 100].

    Returns:
        ``[N, ..., len(q)]`` float64; NaN where a series has no present value.

    """
    v = np.where(missing, np.inf, np.asarray(values, dtype=np.float64))
    v.sort(axis=1)
    n = (~missing).sum(axis=1, keepdims=True)  # [N, 1, ...]
    out = []
    for p in q:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is not in [0, 100]")
        pos = (np.maximum(n, 1) - 1) * (p / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        frac = pos - lo
        vlo = np.take_along_axis(v, lo, axis=1)
        vhi = np.take_along_axis(v, hi, axis=1)
        with np.errstate(invalid="ignore"):
            r = np.where(frac > 0, vlo + (vhi - vlo) * frac, vlo)
        out.append(np.where(n > 0, r, np.nan)[:, 0])
    return np.stack(out, axis=-1)


def interpolate_missing(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Fill missing timesteps by linear interpolation in time (edges: nearest present value).

    Args:
        values: ``[N, T]`` values.
        missing: ``[N, T]`` bool, True = missing.

    Returns:
        ``[N, T]`` float64; rows with no present value are all NaN.

    """
    values = np.asarray(values, dtype=np.float64)
    n, T = values.shape
    t = np.broadcast_to(np.arange(T), (n, T))
    valid = ~missing
    prev = np.maximum.accumulate(np.where(valid, t, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(valid, t, T)[:, ::-1], axis=1)[:, ::-1]
    prev_f = np.where(prev < 0, nxt, prev)
    next_f = np.where(nxt >= T, prev_f, nxt)
    prev_f = np.clip(prev_f, 0, T - 1)
    next_f = np.clip(next_f, 0, T - 1)
    v0 = np.take_along_axis(values, prev_f, axis=1)
    v1 = np.take_along_axis(values, next_f, axis=1)
    span = next_f - prev_f
    w = np.where(span > 0, (t - prev_f) / np.where(span > 0, span, 1), 0.0)
    out = np.where(valid, values, v0 + (v1 - v0) * w)
    out[~valid.any(axis=1)] = np.nan
    return out


def ndvi_phenology(ndvi: np.ndarray, missing: np.ndarray, month: np.ndarray | None = None) -> np.ndarray:
    """NDVI phenology descriptors, in the order of :data:`PHENOLOGY_NAMES`.

    Args:
        ndvi: ``[N, T]`` NDVI.
        missing: ``[N, T]`` bool, True = missing (interpolated before computing the descriptors).
        month: ``[N, T]`` calendar month (0 = January) of each timestep, for ``ndvi_peak_month``
            (NaN if None).

    Returns:
        ``[N, len(PHENOLOGY_NAMES)]`` float64; NaN for series without any present NDVI.

    """
    missing = np.asarray(missing, dtype=bool)
    filled = interpolate_missing(ndvi, missing)
    n, T = filled.shape
    empty = np.isnan(filled[:, 0]) if T else np.ones(n, bool)
    v = np.where(empty[:, None], 0.0, filled)
    rows = np.arange(n)
    t = np.arange(T)[None, :]
    peak = v.argmax(axis=1)
    peak_val = v[rows, peak]
    vmin = v.min(axis=1)
    # last minimum at or before the peak (closest onset), first minimum at or after it
    before = np.where(t <= peak[:, None], v, np.inf)
    start = T - 1 - before[:, ::-1].argmin(axis=1)
    after = np.where(t >= peak[:, None], v, np.inf)
    end = after.argmin(axis=1)
    up_len = (peak - start).astype(np.float64)
    down_len = (end - peak).astype(np.float64)
    up_slope = np.where(up_len > 0, (peak_val - v[rows, start]) / np.maximum(up_len, 1), np.nan)
    down_slope = np.where(down_len > 0, (v[rows, end] - peak_val) / np.maximum(down_len, 1), np.nan)
    auc = ((v[:, 1:] + v[:, :-1]) / 2).sum(axis=1)  # trapezoid rule, one unit per timestep
    peak_month = np.asarray(month, dtype=np.float64)[rows, peak] if month is not None else np.full(n, np.nan)
    out = np.stack(
        [
            peak_val,
            peak.astype(np.float64),
            peak_month,
            vmin,
            peak_val - vmin,
            up_slope,
            up_len,
            down_slope,
            down_len,
            auc,
            (~missing).mean(axis=1) if T else np.zeros(n),
        ],
        axis=1,
    )
    out[empty, :-1] = np.nan
    return out


def feature_names(
    bands: Sequence[str] = DEFAULT_BANDS, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> list[str]:
    """Names of the columns :func:`compute_features` returns for these arguments."""
    names = [f"{b}_p{p:g}" for b in bands for p in percentiles]
    names += [f"{b}_iqr" for b in bands]
    return [*names, *PHENOLOGY_NAMES, *STATIC_NAMES]


def compute_features_arrays(
    x: np.ndarray,
    mask: np.ndarray,
    month: np.ndarray | None = None,
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> tuple[np.ndarray, list[str]]:
    """Features of raw arrays (see :func:`compute_features`)."""
    x = np.asarray(x)
    mask = np.asarray(mask, dtype=bool)
    if x.ndim != 3 or x.shape != mask.shape:
        raise ValueError(f"x and mask must be [N, T, 17] alike, got {x.shape} and {mask.shape}")
    unknown = [b for b in bands if b not in BAND_INDEX]
    if unknown:
        raise KeyError(f"unknown band(s) {unknown}; bands are {list(BAND_INDEX)}")
    missing = mask.copy()
    iN = BAND_INDEX["NDVI"]
    missing[..., iN] |= ndvi_mask(mask)
    idx = [BAND_INDEX[b] for b in bands]
    n = len(x)
    # percentiles and quartiles in one pass: [N, B, Q]
    q_all = [*percentiles, 25.0, 75.0]
    pct = masked_percentiles(x[..., idx], missing[..., idx], q_all) if idx else np.zeros((n, 0, len(q_all)))
    parts = [pct[..., : len(percentiles)].reshape(n, -1), pct[..., -1] - pct[..., -2]]
    parts.append(ndvi_phenology(x[..., iN], missing[..., iN], month))
    static = [BAND_INDEX[b] for b in STATIC_NAMES]
    present = ~missing[..., static]
    cnt = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        parts.append(np.where(cnt > 0, (np.where(present, x[..., static], 0.0)).sum(axis=1) / cnt, np.nan))
    feats = np.concatenate(parts, axis=1).astype(np.float32)
    return feats, feature_names(bands, percentiles)


def compute_features(
    samples: PixelSamples,
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> tuple[np.ndarray, list[str]]:
    """Hand-crafted features of the CatBoost baseline.

    Args:
        samples: Samples in physical units.
        bands: Bands summarised by percentiles and IQR.
        percentiles: Percentiles per band.

    Returns:
        ``(features, names)``: ``[N, F]`` float32 (NaN where undefined, e.g. a band entirely missing)
        and the ``F`` column names.

    """
    return compute_features_arrays(
        samples.x, samples.mask, samples.month, bands=bands, percentiles=percentiles
    )


__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_PERCENTILES",
    "PHENOLOGY_NAMES",
    "compute_features",
    "compute_features_arrays",
    "feature_names",
    "interpolate_missing",
    "masked_percentiles",
    "ndvi_phenology",
]
