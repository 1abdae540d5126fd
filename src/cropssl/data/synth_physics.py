"""The generative model behind :mod:`cropssl.data.synth`: parameter tables, weather and per-pixel physics.

Each function draws from the generator it is given, in a fixed order; :func:`cropssl.data.synth.generate`
calls them in sequence per chunk, so the same seed gives the same arrays. The model itself is described in
the :mod:`cropssl.data.synth` docstring.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cropssl.data.synth_specs import (
    BACKGROUNDS,
    CLASSES,
    FOREST,
    REGIONS,
    SOIL,
    URBAN,
    VEG,
    WATER,
    YEAR_ANOMALIES,
    RegionSpec,
    YearAnomaly,
)

I4, I8 = 2, 6  # positions of B4 and B8 within the ten S2 bands


def year_anomaly(year: int, region_index: int) -> YearAnomaly:
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
class Tables:
    """Dense parameter tables indexed by region / class / year (built once per call of ``generate``)."""

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
    background: np.ndarray  # [C] index into BACKGROUNDS
    forest: np.ndarray  # [C] bool


def tables(regions: Sequence[str], years: Sequence[int]) -> Tables:
    """The parameter tables of ``regions`` x classes x ``years``."""
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
        [[dataclasses.astuple(year_anomaly(y, list(REGIONS).index(s.name))) for y in years] for s in specs]
    )
    return Tables(
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
        soil=np.array([SOIL * np.asarray(s.soil_tint) for s in specs]),
        anomaly=anomaly,
        s1=np.array([c.s1 for c in CLASSES]),
        drought=np.array([c.drought_sensitivity for c in CLASSES]),
        background=np.array([BACKGROUNDS[c.background] for c in CLASSES]),
        forest=np.array([c.forest_spectrum for c in CLASSES]),
    )


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function in float32 (through tanh: no overflow)."""
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * z))


def normal(rng: np.random.Generator, scale: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """Zero-mean float32 Gaussian noise (the float32 ziggurat is ~3x faster than float64)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


@dataclasses.dataclass
class Weather:
    """Weather shared by all pixels of one region, year and timestep (drawn once per seed)."""

    precip: np.ndarray  # [R, Y, T] multiplier of the climatology
    temp: np.ndarray  # [R, Y, T] K added
    s1: np.ndarray  # [R, Y, T] dB added to VV and VH (acquisition geometry, wind, frost)


def weather(tab: Tables, timesteps: int, seed: int) -> Weather:
    """The shared weather of every region, year and timestep for ``seed``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EA5, 1])
    shape = (len(tab.regions), len(tab.years), timesteps)
    return Weather(
        precip=rng.gamma(4.0, 0.25, shape).astype(np.float32),
        temp=rng.normal(0.0, 0.9, shape).astype(np.float32),
        s1=rng.normal(0.0, 0.5, shape).astype(np.float32),
    )


def green_curve(
    tab: Tables,
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
    shift = tab.shift[r].astype(f32) + an[:, 0] + normal(rng, 7.0 + 18.0 * v, n)  # per-pixel sowing shift
    sos = comps[..., 0] + shift[:, None] + normal(rng, 4.0 + 8.0 * v, comps.shape[:2])
    eos = comps[..., 1] + shift[:, None] + normal(rng, 6.0 + 8.0 * v, comps.shape[:2])
    amp_f = np.clip(an[:, 1], 0.3, 1.3) ** tab.drought[c].astype(f32)
    amp = comps[..., 4] * (amp_f * np.clip(1 + normal(rng, 0.08 + 0.17 * v, n), 0.4, 1.6))[:, None]
    green = None
    # windows longer than 12 months also see the previous season(s) of the same class
    for season in range((max(T, 12) - 1) // 12 + 1):
        tt = t[:, None, :] + f32(season * 365.25)  # [n, 1, T]
        g = amp[..., None] * (
            sigmoid((tt - sos[..., None]) / comps[..., 2:3])
            - sigmoid((tt - eos[..., None]) / comps[..., 3:4])
        )  # [n, K, T]
        green = g if green is None else np.maximum(green, g)
    dip = tab.dip[r, c].astype(f32)
    dip_z = (t - (dip[:, 0:1] + shift[:, None])) / dip[:, 1:2]
    curve = green.max(1)  # type: ignore[union-attr]
    curve += (tab.base[r, c].astype(f32) + normal(rng, 0.025 + 0.05 * v, n))[:, None]
    curve -= dip[:, 2:3] * np.exp(f32(-0.5) * dip_z * dip_z)
    return curve, shift


def terrain(
    tab: Tables, r: np.ndarray, lat: np.ndarray, lon: np.ndarray, is_water: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Elevation (m) and slope (degrees) per pixel: smooth fields of the location plus noise."""
    el_mean, el_amp, slope_mean = tab.terrain[r].T
    phase = np.sin(0.9 * lat + 0.2) * np.cos(0.7 * lon - 0.4) + 0.5 * np.sin(1.15 * lat + 1.7 * lon)
    elev = np.maximum(el_mean + el_amp * (phase + 0.15 * rng.standard_normal(len(r))), 0.0)
    elev = np.where(is_water, np.maximum(elev - 0.3 * el_amp, 0.0), elev)
    slope = np.clip(rng.gamma(2.0, slope_mean / 2.0, len(r)) * (0.6 + 0.8 * np.abs(phase)), 0.0, 60.0)
    return elev, np.where(is_water, 0.0, slope)


def climate(
    tab: Tables, w: Weather, r: np.ndarray, yi: np.ndarray, month: np.ndarray, t: np.ndarray, an: np.ndarray,
    elev: np.ndarray, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Temperature (K), precipitation (m) and soil wetness (0-1) per pixel and timestep."""
    f32 = np.float32
    tmean, tamp, tpeak = tab.temp[r].T.astype(f32)
    el_mean = tab.terrain[r, 0]
    temp = (tmean + an[:, 2] - f32(0.0065) * (elev - el_mean).astype(f32))[:, None] + tamp[:, None] * np.cos(
        f32(2 * np.pi / 365.25) * (t - tpeak[:, None])
    )
    temp += w.temp[r, yi] + normal(rng, 0.5, t.shape)
    precip = (tab.precip[r[:, None], month].astype(f32) * w.precip[r, yi]) * an[:, 3:4]
    precip *= rng.gamma(8.0, 1.0 / 8.0, t.shape).astype(f32)  # local showers
    precip = np.minimum(precip, f32(0.6))
    return temp, precip, 1.0 - np.exp(precip * f32(-1 / 0.06))


def optical(
    tab: Tables, r: np.ndarray, c: np.ndarray, curve: np.ndarray, wet: np.ndarray, rng: np.random.Generator,
    v: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ten S2 reflectances ``[n, T, 10]`` (linear mixing set by the NDVI curve) and the cover ``fc``."""
    f32 = np.float32
    n, T = curve.shape
    bg_kind = tab.background[c]
    soil = tab.soil[r] * rng.uniform(0.75 - 0.15 * v, 1.25 + 0.15 * v, n)[:, None]
    urban_mix = rng.random(n)[:, None]
    bg = np.where((bg_kind == 1)[:, None], urban_mix * URBAN + (1 - urban_mix) * soil, soil)  # [n, 10]
    bg = np.where((bg_kind == 2)[:, None], WATER * rng.uniform(0.8, 1.2, n)[:, None], bg).astype(f32)
    veg = (np.where(tab.forest[c][:, None], FOREST, VEG) * rng.normal(1.0, 0.05, (n, 1))).astype(f32)
    darken = 1.0 - f32(0.2) * wet * (bg_kind != 2)[:, None]  # [n, T] wet soil is darker
    bg_t = bg[:, None, :] * darken[..., None]  # [n, T, 10]
    s4, s8 = bg_t[..., I4], bg_t[..., I8]
    v4, v8 = veg[:, None, I4], veg[:, None, I8]
    d4, d8 = v4 - s4, v8 - s8
    num = curve * (s8 + s4) - (s8 - s4)
    den = (d8 - d4) - curve * (d8 + d4)
    fc = np.clip(num / np.where(np.abs(den) < 1e-6, f32(1e-6), den), 0.0, 1.0)  # [n, T]
    refl = veg[:, None, :] - bg_t
    refl *= fc[..., None]
    refl += bg_t
    refl *= 1 + normal(rng, 0.025, (n, T, 10))
    refl[..., :3] += rng.gamma(2.0, 25.0, (n, T, 1)).astype(f32) * np.array([1.5, 1.0, 0.6], f32)  # haze
    return np.clip(np.rint(refl), 1.0, 10000.0), fc


def radar(
    tab: Tables, w: Weather, r: np.ndarray, yi: np.ndarray, c: np.ndarray, c2: np.ndarray, m: np.ndarray,
    fc: np.ndarray, wet: np.ndarray, is_water: np.ndarray, rng: np.random.Generator, v: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """S1 VV and VH (dB) ``[n, T]``: class response (``c2`` mixed in by ``m``), biomass, wetness, speckle."""
    f32 = np.float32
    n, T = fc.shape
    s1 = ((1 - m) * tab.s1[c] + m * tab.s1[c2]).astype(f32)  # [n, 5]
    speckle = np.where(is_water, f32(2.0), f32(0.8 + 0.7 * v))[:, None]
    common = w.s1[r, yi] + normal(rng, 1.0 + 1.5 * v, (n, 1))  # acquisition + per-field offset
    vv = s1[:, 0:1] + s1[:, 1:2] * fc + s1[:, 4:5] * wet + common + speckle * normal(rng, 1.0, (n, T))
    vh = s1[:, 2:3] + s1[:, 3:4] * fc + f32(0.6) * s1[:, 4:5] * wet + common
    vh += speckle * normal(rng, 1.0, (n, T))
    return vv, vh


def missing(
    tab: Tables, r: np.ndarray, month: np.ndarray, an: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cloudy months (S2 and NDVI missing) and S1 orbit gaps (independent of clouds), ``[n, T]`` each."""
    p_cloud = np.clip(tab.cloud[r[:, None], month] + an[:, 4:5], 0.0, 0.97)
    cloudy = rng.random(month.shape, dtype=np.float32) < p_cloud
    return cloudy, rng.random(month.shape, dtype=np.float32) < 0.02
