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

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cropssl.data.synth_specs import (
    _BACKGROUNDS,
    _CLASS_INDEX,
    _DAYS_PER_MONTH,
    _FOREST,
    _SOIL,
    _URBAN,
    _VEG,
    _WATER,
    CLASSES,
    DEFAULT_VARIETY,
    DEFAULT_YEARS,
    REGIONS,
    YEAR_ANOMALIES,
    ClassSpec,
    RegionSpec,
    YearAnomaly,
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
_I4, _I8 = 2, 6  # positions of B4 and B8 within the ten S2 bands

#: Pixels generated per chunk (bounds the memory of intermediates; fixed so output is reproducible).
CHUNK = 32768
SOURCE = "cropssl-synth"


def _year_anomaly(year: int, region_index: int) -> YearAnomaly:
    """Named anomaly of ``year`` plus a small deterministic regional perturbation."""
    base = YEAR_ANOMALIES.get(int(year))
    rng = np.random.default_rng([abs(int(year)), region_index, 7919])
    if base is None:
        base = YearAnomaly(
            shift_days=float(rng.normal(0, 8)),
            amp_factor=float(np.clip(rng.normal(1.0, 0.08), 0.7, 1.1)),
            temp_offset=float(rng.normal(0, 0.8)),
            precip_factor=float(np.clip(rng.normal(1.0, 0.2), 0.5, 1.5)),
            cloud_offset=float(rng.normal(0, 0.05)),
        )
    return YearAnomaly(
        shift_days=base.shift_days + float(rng.normal(0, 3)),
        amp_factor=base.amp_factor * float(np.clip(rng.normal(1.0, 0.03), 0.9, 1.1)),
        temp_offset=base.temp_offset + float(rng.normal(0, 0.3)),
        precip_factor=base.precip_factor * float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2)),
        cloud_offset=base.cloud_offset + float(rng.normal(0, 0.02)),
    )


@dataclasses.dataclass
class _Tables:
    """Dense parameter tables indexed by region / class / year (built once per call)."""

    regions: list[RegionSpec]
    years: np.ndarray  # [Y]
    class_cum: np.ndarray  # [R, C] cumulative class probabilities
    base: np.ndarray  # [R, C]
    comps: np.ndarray  # [R, C, K, 5]
    dip: np.ndarray  # [R, C, 3]
    start_month: np.ndarray  # [R]
    shift: np.ndarray  # [R]
    cloud: np.ndarray  # [R, 12]
    precip: np.ndarray  # [R, 12]
    temp: np.ndarray  # [R, 3] mean, amp, peak day
    terrain: np.ndarray  # [R, 3] elev mean, elev amp, slope mean
    box: np.ndarray  # [R, 4] lat0, lat1, lon0, lon1
    soil: np.ndarray  # [R, 10]
    anomaly: np.ndarray  # [R, Y, 5] shift, amp, temp, precip, cloud
    s1: np.ndarray  # [C, 5]
    drought: np.ndarray  # [C]
    background: np.ndarray  # [C] index into _BACKGROUNDS
    forest: np.ndarray  # [C] bool


def _tables(regions: Sequence[str], years: Sequence[int]) -> _Tables:
    specs = [REGIONS[r] for r in regions]
    n_comp = max(len(c.comps) for c in CLASSES)
    for spec in specs:
        for ov in spec.overrides.values():
            n_comp = max(n_comp, len(ov.get("comps", ())))
    R, C = len(specs), len(CLASSES)
    base = np.zeros((R, C))
    comps = np.zeros((R, C, n_comp, 5))
    comps[..., :4] = (0.0, 1.0, 1.0, 1.0)  # inert component: amp 0
    dip = np.zeros((R, C, 3))
    mix = np.zeros((R, C))
    for ri, spec in enumerate(specs):
        for ci, cls in enumerate(CLASSES):
            ov = spec.overrides.get(cls.name, {})
            base[ri, ci] = ov.get("base", cls.base)
            for k, comp in enumerate(ov.get("comps", cls.comps)):
                comps[ri, ci, k] = comp
            dip[ri, ci] = ov.get("dip", cls.dip)
            mix[ri, ci] = spec.class_mix.get(cls.name, 0.0)
    mix /= mix.sum(1, keepdims=True)
    cum = np.cumsum(mix, 1)
    cum[:, -1] = 1.0
    anomaly = np.array(
        [[dataclasses.astuple(_year_anomaly(y, list(REGIONS).index(s.name))) for y in years] for s in specs]
    )
    return _Tables(
        regions=specs,
        years=np.asarray(years, np.int64),
        class_cum=cum,
        base=base,
        comps=comps,
        dip=dip,
        start_month=np.array([s.start_month for s in specs]),
        shift=np.array([s.shift_days for s in specs], np.float64),
        cloud=np.array([s.cloud for s in specs]),
        precip=np.array([s.precip for s in specs]),
        temp=np.array([(s.temp_mean, s.temp_amp, s.temp_peak_day) for s in specs]),
        terrain=np.array([(s.elev_mean, s.elev_amp, s.slope_mean) for s in specs]),
        box=np.array([(*s.lat, *s.lon) for s in specs]),
        soil=np.array([_SOIL * np.asarray(s.soil_tint) for s in specs]),
        anomaly=anomaly,
        s1=np.array([c.s1 for c in CLASSES]),
        drought=np.array([c.drought_sensitivity for c in CLASSES]),
        background=np.array([_BACKGROUNDS[c.background] for c in CLASSES]),
        forest=np.array([c.forest_spectrum for c in CLASSES]),
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * z))


def _normal(rng: np.random.Generator, scale: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """Zero-mean float32 Gaussian noise (the float32 ziggurat is ~3x faster than float64)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


@dataclasses.dataclass
class _Weather:
    """Weather shared by all pixels of one region, year and timestep (drawn once per seed)."""

    precip: np.ndarray  # [R, Y, T] multiplier of the climatology
    temp: np.ndarray  # [R, Y, T] K added
    s1: np.ndarray  # [R, Y, T] dB added to VV and VH (acquisition geometry, wind, frost)


def _weather(tab: _Tables, timesteps: int, seed: int) -> _Weather:
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EA5, 1])
    shape = (len(tab.regions), len(tab.years), timesteps)
    return _Weather(
        precip=rng.gamma(4.0, 0.25, shape).astype(np.float32),
        temp=rng.normal(0.0, 0.9, shape).astype(np.float32),
        s1=rng.normal(0.0, 0.5, shape).astype(np.float32),
    )


def _green(
    tab: _Tables,
    r: np.ndarray,
    c: np.ndarray,
    t: np.ndarray,
    an: np.ndarray,
    rng: np.random.Generator,
    v: float,
) -> tuple[np.ndarray, np.ndarray]:
    """NDVI curve ``[n, T]`` of class ``c`` in region ``r`` (before pixel noise) and the sowing shift."""
    f32 = np.float32
    n, T = t.shape
    comps = tab.comps[r, c].astype(f32)  # [n, K, 5]
    shift = tab.shift[r].astype(f32) + an[:, 0] + _normal(rng, 7.0 + 18.0 * v, n)  # per-pixel sowing shift
    sos = comps[..., 0] + shift[:, None] + _normal(rng, 4.0 + 8.0 * v, comps.shape[:2])
    eos = comps[..., 1] + shift[:, None] + _normal(rng, 6.0 + 8.0 * v, comps.shape[:2])
    amp_f = np.clip(an[:, 1], 0.3, 1.3) ** tab.drought[c].astype(f32)
    amp = comps[..., 4] * (amp_f * np.clip(1 + _normal(rng, 0.08 + 0.17 * v, n), 0.4, 1.6))[:, None]
    green = None
    # windows longer than 12 months also see the previous season(s) of the same class
    for season in range((max(T, 12) - 1) // 12 + 1):
        tt = t[:, None, :] + f32(season * 365.25)  # [n, 1, T]
        g = amp[..., None] * (
            _sigmoid((tt - sos[..., None]) / comps[..., 2:3])
            - _sigmoid((tt - eos[..., None]) / comps[..., 3:4])
        )  # [n, K, T]
        green = g if green is None else np.maximum(green, g)
    dip = tab.dip[r, c].astype(f32)
    dip_z = (t - (dip[:, 0:1] + shift[:, None])) / dip[:, 1:2]
    curve = green.max(1)  # type: ignore[union-attr]
    curve += (tab.base[r, c].astype(f32) + _normal(rng, 0.025 + 0.05 * v, n))[:, None]
    curve -= dip[:, 2:3] * np.exp(f32(-0.5) * dip_z * dip_z)
    return curve, shift


def _generate_chunk(
    tab: _Tables, weather: _Weather, n: int, timesteps: int, rng: np.random.Generator, variety: float = 1.0
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
    is_water = c == _CLASS_INDEX["water"]

    # --- time axis: months relative to January of the harvest year (the window ends in that year) ---
    sm = tab.start_month[r]
    rel = sm[:, None] + np.arange(T)[None, :] - 12 * ((sm + T - 1) // 12)[:, None]  # [n, T]
    month = np.mod(rel, 12).astype(np.int8)
    t = (rel * _DAYS_PER_MONTH + 0.5 * _DAYS_PER_MONTH).astype(f32)  # mid-month day

    # --- phenology -> NDVI curve; mixed pixels (field edges, intercropping, weeds) blend a second class ---
    curve, _ = _green(tab, r, c, t, an, rng, v)
    c2 = np.minimum((rng.random(n)[:, None] >= tab.class_cum[r]).sum(1), len(CLASSES) - 1)
    curve2, _ = _green(tab, r, c2, t, an, rng, v)
    mixed = rng.random(n) < 0.7 * min(v, 1.0)
    m = np.where(mixed, rng.uniform(0.0, min(0.5 + 0.15 * v, 0.9), n), 0.0).astype(f32)[:, None]
    curve = (1 - m) * curve + m * curve2
    curve += _normal(rng, 0.02 + 0.03 * v, (n, T))
    curve = np.clip(curve, -0.5, 0.93)

    # --- terrain and weather ---
    el_mean, el_amp, slope_mean = tab.terrain[r].T
    phase = np.sin(0.9 * lat + 0.2) * np.cos(0.7 * lon - 0.4) + 0.5 * np.sin(1.15 * lat + 1.7 * lon)
    elev = np.maximum(el_mean + el_amp * (phase + 0.15 * rng.standard_normal(n)), 0.0)
    elev = np.where(is_water, np.maximum(elev - 0.3 * el_amp, 0.0), elev)
    slope = np.clip(rng.gamma(2.0, slope_mean / 2.0, n) * (0.6 + 0.8 * np.abs(phase)), 0.0, 60.0)
    slope = np.where(is_water, 0.0, slope)
    tmean, tamp, tpeak = tab.temp[r].T.astype(f32)
    temp = (tmean + an[:, 2] - f32(0.0065) * (elev - el_mean).astype(f32))[:, None] + tamp[:, None] * np.cos(
        f32(2 * np.pi / 365.25) * (t - tpeak[:, None])
    )
    temp += weather.temp[r, yi] + _normal(rng, 0.5, (n, T))
    precip = (tab.precip[r[:, None], month].astype(f32) * weather.precip[r, yi]) * an[:, 3:4]
    precip *= rng.gamma(8.0, 1.0 / 8.0, (n, T)).astype(f32)  # local showers
    precip = np.minimum(precip, f32(0.6))
    wet = 1.0 - np.exp(precip * f32(-1 / 0.06))

    # --- optical: linear mixing of background and vegetation, cover set by the NDVI curve ---
    bg_kind = tab.background[c]
    soil = tab.soil[r] * rng.uniform(0.75 - 0.15 * v, 1.25 + 0.15 * v, n)[:, None]
    urban_mix = rng.random(n)[:, None]
    bg = np.where((bg_kind == 1)[:, None], urban_mix * _URBAN + (1 - urban_mix) * soil, soil)  # [n, 10]
    bg = np.where((bg_kind == 2)[:, None], _WATER * rng.uniform(0.8, 1.2, n)[:, None], bg).astype(f32)
    veg = (np.where(tab.forest[c][:, None], _FOREST, _VEG) * rng.normal(1.0, 0.05, (n, 1))).astype(f32)
    darken = 1.0 - f32(0.2) * wet * (bg_kind != 2)[:, None]  # [n, T] wet soil is darker
    bg_t = bg[:, None, :] * darken[..., None]  # [n, T, 10]
    s4, s8 = bg_t[..., _I4], bg_t[..., _I8]
    v4, v8 = veg[:, None, _I4], veg[:, None, _I8]
    d4, d8 = v4 - s4, v8 - s8
    num = curve * (s8 + s4) - (s8 - s4)
    den = (d8 - d4) - curve * (d8 + d4)
    fc = np.clip(num / np.where(np.abs(den) < 1e-6, f32(1e-6), den), 0.0, 1.0)  # [n, T]
    refl = veg[:, None, :] - bg_t
    refl *= fc[..., None]
    refl += bg_t
    refl *= 1 + _normal(rng, 0.025, (n, T, 10))
    refl[..., :3] += rng.gamma(2.0, 25.0, (n, T, 1)).astype(f32) * np.array([1.5, 1.0, 0.6], f32)  # haze
    refl = np.clip(np.rint(refl), 1.0, 10000.0)
    b4, b8 = refl[..., _I4], refl[..., _I8]
    ndvi = (b8 - b4) / (b8 + b4)

    # --- radar ---
    s1 = ((1 - m) * tab.s1[c] + m * tab.s1[c2]).astype(f32)  # [n, 5]
    speckle = np.where(is_water, f32(2.0), f32(0.8 + 0.7 * v))[:, None]
    common = weather.s1[r, yi] + _normal(rng, 1.0 + 1.5 * v, (n, 1))  # acquisition + per-field offset
    vv = s1[:, 0:1] + s1[:, 1:2] * fc + s1[:, 4:5] * wet + common + speckle * _normal(rng, 1.0, (n, T))
    vh = s1[:, 2:3] + s1[:, 3:4] * fc + f32(0.6) * s1[:, 4:5] * wet + common
    vh += speckle * _normal(rng, 1.0, (n, T))

    # --- assemble ---
    x = np.empty((n, T, NUM_BANDS), f32)
    x[..., BAND_INDEX["VV"]] = np.clip(vv, -35.0, 5.0)
    x[..., BAND_INDEX["VH"]] = np.clip(vh, -40.0, 0.0)
    x[..., _S2_SLICE] = refl
    x[..., BAND_INDEX["temperature_2m"]] = np.round(temp, 2)
    x[..., BAND_INDEX["total_precipitation"]] = np.round(precip, 5)
    x[..., BAND_INDEX["elevation"]] = np.round(elev)[:, None]
    x[..., BAND_INDEX["slope"]] = np.round(slope)[:, None]
    x[..., BAND_INDEX["NDVI"]] = ndvi

    mask = np.zeros((n, T, NUM_BANDS), bool)
    p_cloud = np.clip(tab.cloud[r[:, None], month] + an[:, 4:5], 0.0, 0.97)
    cloudy = rng.random((n, T), dtype=f32) < p_cloud
    mask[..., _S2_SLICE] = cloudy[..., None]
    mask[..., BAND_INDEX["NDVI"]] = cloudy
    s1_gap = rng.random((n, T), dtype=f32) < 0.02  # orbit gaps, independent of clouds
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
    tab = _tables(regions, years)
    weather = _weather(tab, timesteps, seed)
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
        out = _generate_chunk(tab, weather, stop - start, timesteps, rng, variety)
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
