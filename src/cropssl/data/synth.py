"""Synthetic crop pixel time series: the embedded default data when the real WorldCereal files are absent.

The generator is a small, fully vectorised physical caricature of what the real extractions contain:

* **Phenology.** Each class has an NDVI trajectory ``base + max_k amp_k * (sig((t - sos_k) / r_k) -
  sig((t - eos_k) / f_k))`` (one or two double-logistic components, e.g. autumn emergence + spring
  growth of winter cereals, optional flowering / mowing dip) on a day axis relative to 1 January of the
  harvest year. Regions shift the calendar (southern hemisphere, rainy seasons), years add anomalies
  (drought lowers the amplitude, a late year delays green-up), pixels jitter dates, amplitude and base.
* **Optical.** The NDVI curve sets a fractional vegetation cover ``fc`` by inverting a linear mixture of
  a background spectrum (soil, urban or water) and a vegetation spectrum at B4/B8; all ten S2 bands are
  then mixed with the same ``fc``, so NDVI recomputed from B8/B4 follows the curve. Wet soil is darker.
* **Radar.** S1 VV/VH in dB rise with biomass (``fc``) and soil moisture (from precipitation); water is
  dark, forest has high VH, built-up areas high VV. Radar is never affected by clouds (rare orbit gaps).
* **Clouds.** Each region has a monthly cloud probability; a cloudy month masks all S2 bands and NDVI.
* **Weather and terrain.** AgERA5-like monthly temperature (K) and precipitation (m) per region and
  year, with an elevation lapse rate; elevation (m) and slope (degrees) are static smooth fields.

Everything is drawn from ``numpy.random.default_rng`` seeded per fixed-size chunk (and once per seed for
the regional weather), so the same seed gives the same arrays and byte-identical shards (with the same
numpy build; transcendental functions may differ in the last bit across CPUs / numpy versions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cropssl.data.synth_physics import (
    I4,
    I8,
    Tables,
    Weather,
    climate,
    green_curve,
    missing,
    normal,
    optical,
    radar,
    tables,
    terrain,
    weather,
)
from cropssl.data.synth_specs import (
    CLASS_INDEX,
    CLASSES,
    DAYS_PER_MONTH,
    DEFAULT_VARIETY,
    DEFAULT_YEARS,
    REGIONS,
    YEAR_ANOMALIES,
    ClassSpec,
    RegionSpec,
    class_names,
)
from cropssl.schema import BAND_INDEX, NUM_BANDS, PixelSamples

__all__ = [
    "CLASSES",
    "DEFAULT_YEARS",
    "REGIONS",
    "YEAR_ANOMALIES",
    "ClassSpec",
    "RegionSpec",
    "class_names",
    "generate",
    "synth_to_shards",
]

_S2_SLICE = slice(BAND_INDEX["B2"], BAND_INDEX["B12"] + 1)  # the ten S2 bands are contiguous

#: Pixels generated per chunk (bounds the memory of intermediates; fixed so output is reproducible).
CHUNK = 32768
SOURCE = "cropssl-synth"


def _generate_chunk(
    tab: Tables, w: Weather, n: int, timesteps: int, rng: np.random.Generator, variety: float = 1.0
) -> dict[str, np.ndarray]:
    """Generate ``n`` pixels; returns raw arrays (no meta strings)."""
    v = float(variety)
    T = timesteps
    f32 = np.float32
    R, Y = len(tab.regions), len(tab.years)
    r = rng.integers(0, R, n)
    yi = rng.integers(0, Y, n)
    c = (rng.random(n)[:, None] >= tab.class_cum[r]).sum(1)
    c = np.minimum(c, len(CLASSES) - 1)
    box = tab.box[r]
    lat = box[:, 0] + rng.random(n) * (box[:, 1] - box[:, 0])
    lon = box[:, 2] + rng.random(n) * (box[:, 3] - box[:, 2])
    an = tab.anomaly[r, yi].astype(f32)  # [n, 5]
    is_water = c == CLASS_INDEX["water"]

    # --- time axis: months relative to January of the harvest year (the window ends in that year) ---
    sm = tab.start_month[r]
    rel = sm[:, None] + np.arange(T)[None, :] - 12 * ((sm + T - 1) // 12)[:, None]  # [n, T]
    month = np.mod(rel, 12).astype(np.int8)
    t = (rel * DAYS_PER_MONTH + 0.5 * DAYS_PER_MONTH).astype(f32)  # mid-month day

    # --- phenology -> NDVI curve; mixed pixels (field edges, intercropping, weeds) blend a second class ---
    curve, _ = green_curve(tab, r, c, t, an, rng, v)
    c2 = np.minimum((rng.random(n)[:, None] >= tab.class_cum[r]).sum(1), len(CLASSES) - 1)
    curve2, _ = green_curve(tab, r, c2, t, an, rng, v)
    mixed = rng.random(n) < 0.7 * min(v, 1.0)
    m = np.where(mixed, rng.uniform(0.0, min(0.5 + 0.15 * v, 0.9), n), 0.0).astype(f32)[:, None]
    curve = (1 - m) * curve + m * curve2
    curve += normal(rng, 0.02 + 0.03 * v, (n, T))
    curve = np.clip(curve, -0.5, 0.93)

    elev, slope = terrain(tab, r, lat, lon, is_water, rng)
    temp, precip, wet = climate(tab, w, r, yi, month, t, an, elev, rng)
    refl, fc = optical(tab, r, c, curve, wet, rng, v)
    vv, vh = radar(tab, w, r, yi, c, c2, m, fc, wet, is_water, rng, v)

    x = np.empty((n, T, NUM_BANDS), f32)
    x[..., BAND_INDEX["VV"]] = np.clip(vv, -35.0, 5.0)
    x[..., BAND_INDEX["VH"]] = np.clip(vh, -40.0, 0.0)
    x[..., _S2_SLICE] = refl
    x[..., BAND_INDEX["temperature_2m"]] = np.round(temp, 2)
    x[..., BAND_INDEX["total_precipitation"]] = np.round(precip, 5)
    x[..., BAND_INDEX["elevation"]] = np.round(elev)[:, None]
    x[..., BAND_INDEX["slope"]] = np.round(slope)[:, None]
    x[..., BAND_INDEX["NDVI"]] = (refl[..., I8] - refl[..., I4]) / (refl[..., I8] + refl[..., I4])
    mask = np.zeros((n, T, NUM_BANDS), bool)
    cloudy, s1_gap = missing(tab, r, month, an, rng)
    mask[..., _S2_SLICE] = cloudy[..., None]
    mask[..., BAND_INDEX["NDVI"]] = cloudy
    mask[..., BAND_INDEX["VV"]] = s1_gap
    mask[..., BAND_INDEX["VH"]] = s1_gap
    x[mask] = 0.0
    return {
        "x": x,
        "mask": mask,
        "month": month,
        "latlon": np.stack([lat, lon], 1).astype(f32),
        "label": np.array([cl.ewoc_code for cl in CLASSES], np.int64)[c],
        "year": tab.years[yi].astype(np.int16),
        "region": r,
        "year_index": yi,
    }


def _check_args(
    n_pixels: int, timesteps: int, regions: Sequence[str] | None, years: Sequence[int] | None
) -> tuple[list[str], list[int]]:
    """Validate arguments; returns the region and year lists (defaults filled in)."""
    if int(n_pixels) < 1:
        raise ValueError(f"n_pixels must be >= 1, got {n_pixels}")
    if int(timesteps) < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    regions = list(REGIONS) if regions is None else [str(r) for r in regions]
    unknown = [r for r in regions if r not in REGIONS]
    if unknown or not regions:
        raise ValueError(f"unknown region(s) {unknown}; valid regions: {', '.join(REGIONS)}")
    years = list(DEFAULT_YEARS) if years is None else [int(y) for y in years]
    if not years:
        raise ValueError("years must not be empty")
    return regions, years


def generate(
    n_pixels: int,
    *,
    timesteps: int = 12,
    regions: Sequence[str] | None = None,
    years: Sequence[int] | None = None,
    seed: int = 0,
    variety: float = DEFAULT_VARIETY,
) -> PixelSamples:
    """Generate synthetic labelled pixel time series in physical units.

    Args:
        n_pixels: Number of pixels (>= 1).
        timesteps: Months per window, starting at each region's agricultural-year start.
        regions: Region codes (keys of :data:`REGIONS`); all by default. Pixels are spread evenly.
        years: Harvest years (see :data:`YEAR_ANOMALIES`); :data:`DEFAULT_YEARS` by default.
        seed: Random seed; the same seed and arguments give identical arrays.
        variety: Within-class variety (0 = the clean physical model; the default is calibrated so that the
            classes overlap as much as the real WorldCereal files' do, see :data:`DEFAULT_VARIETY`): wider
            sowing dates, amplitudes, soil brightness and radar field offsets, and mixed pixels (a share of
            a second class of the region blended into the curves and the radar response).

    Returns:
        The samples; every pixel is labelled with the ``ewoc_code`` of its class.

    Raises:
        ValueError: ``n_pixels`` or ``timesteps`` < 1, or an unknown region.

    """
    regions, years = _check_args(n_pixels, timesteps, regions, years)
    tab = tables(regions, years)
    w = weather(tab, timesteps, seed)
    n = int(n_pixels)
    x = np.empty((n, timesteps, NUM_BANDS), np.float32)
    mask = np.empty((n, timesteps, NUM_BANDS), bool)
    month = np.empty((n, timesteps), np.int8)
    latlon = np.empty((n, 2), np.float32)
    label = np.empty(n, np.int64)
    year = np.empty(n, np.int16)
    ref_code = np.empty(n, np.int64)
    for k, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, k, 0])
        out = _generate_chunk(tab, w, stop - start, timesteps, rng, variety)
        x[start:stop] = out["x"]
        mask[start:stop] = out["mask"]
        month[start:stop] = out["month"]
        latlon[start:stop] = out["latlon"]
        label[start:stop] = out["label"]
        year[start:stop] = out["year"]
        ref_code[start:stop] = out["region"] * len(years) + out["year_index"]
    region_idx = ref_code // len(years)
    meta = _meta(n, seed, regions, years, ref_code, region_idx, latlon)
    return PixelSamples(x=x, mask=mask, month=month, latlon=latlon, label=label, year=year, meta=meta)


def _meta(
    n: int,
    seed: int,
    regions: list[str],
    years: list[int],
    ref_code: np.ndarray,
    region_idx: np.ndarray,
    latlon: np.ndarray,
) -> dict[str, np.ndarray]:
    """Meta string arrays built from small lookup tables (no per-pixel formatting loop in Python)."""
    ids = np.char.add(f"synth_{int(seed)}_", np.char.zfill(np.arange(n).astype("U"), 8)).astype(object)
    ref_table = np.array([f"synth_{r}_{y}" for r in regions for y in years], dtype=object)
    # spatial blocks of 1 x 1 degree (about the size of an H3 resolution-3 cell)
    ilat = np.floor(latlon[:, 0]).astype(np.int64)
    ilon = np.floor(latlon[:, 1]).astype(np.int64)
    key = (region_idx * 1000 + (ilat + 90)) * 1000 + (ilon + 180)
    uniq, inv = np.unique(key, return_inverse=True)
    cell_table = np.array(
        [f"{regions[k // 1_000_000]}_{(k // 1000) % 1000 - 90:+03d}_{k % 1000 - 180:+04d}" for k in uniq],
        dtype=object,
    )
    return {
        "sample_id": ids,
        "source": np.full(n, SOURCE, dtype=object),
        "ref_id": ref_table[ref_code],
        "country": np.array(regions, dtype=object)[region_idx],
        "h3_l3_cell": cell_table[inv.reshape(-1)],
    }


def synth_to_shards(
    out: str | os.PathLike[str],
    n_pixels: int,
    *,
    timesteps: int = 12,
    regions: Sequence[str] | None = None,
    years: Sequence[int] | None = None,
    seed: int = 0,
    variety: float = DEFAULT_VARIETY,
    samples_per_record: int = 256,
    records_per_shard: int = 16,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate ``n_pixels`` synthetic pixels and write them as shards (see :func:`generate`).

    Args:
        out: Output shard directory (must not exist unless ``overwrite``).
        n_pixels: Number of pixels.
        timesteps: Months per window.
        regions: Region codes; all by default.
        years: Harvest years; :data:`DEFAULT_YEARS` by default.
        seed: Random seed (same seed -> byte-identical shards).
        variety: Within-class variety (see :func:`generate`).
        samples_per_record: Pixels per webdataset record.
        records_per_shard: Records per shard.
        overwrite: Replace an existing directory.

    Returns:
        The manifest written (its ``synth`` entry records the generator parameters).

    """
    from cropssl.data.shard_writer import write_shards

    regions, years = _check_args(n_pixels, timesteps, regions, years)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    samples = generate(
        n_pixels, timesteps=timesteps, regions=regions, years=years, seed=seed, variety=variety
    )
    params = {
        "n_pixels": int(n_pixels),
        "timesteps": int(timesteps),
        "regions": regions,
        "years": years,
        "seed": int(seed),
        "variety": float(variety),
        "classes": {str(c.ewoc_code): c.name for c in CLASSES},
    }
    return write_shards(
        samples,
        out,
        samples_per_record=samples_per_record,
        records_per_shard=records_per_shard,
        sources=[SOURCE],
        extra={"synth": params},
        overwrite=overwrite,
    )
