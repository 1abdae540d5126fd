"""What the synthetic generator draws from: spectra, crop classes, regions and year anomalies.

The numbers here are the generator's calibration (see :mod:`cropssl.data.synth` for how they are used
and ``experiments/synth/`` for the calibration against the real files' per-class spread).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

DAYS_PER_MONTH = 365.25 / 12

# S2 bands in schema order:       B2     B3     B4     B5     B6     B7     B8     B8A    B11    B12
SOIL = np.array([900, 1200, 1500, 1750, 1900, 2000, 2150, 2250, 3000, 2500], np.float64)
URBAN = np.array([1150, 1250, 1350, 1500, 1600, 1700, 1800, 1850, 2300, 2100], np.float64)
WATER = np.array([650, 600, 400, 330, 270, 240, 220, 200, 90, 70], np.float64)
VEG = np.array([230, 550, 230, 950, 2900, 3700, 4100, 4200, 2100, 950], np.float64)
FOREST = np.array([200, 420, 180, 700, 2300, 2900, 3200, 3300, 1500, 650], np.float64)
BACKGROUNDS = {"soil": 0, "urban": 1, "water": 2}


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """One land-cover / crop class.

    Attributes:
        name: Short name.
        ewoc_code: WorldCereal ``ewoc_code`` used as label.
        base: NDVI outside the growing season.
        comps: Double-logistic components ``(sos, eos, rise, fall, amp)`` in days relative to 1 January
            of the harvest year (northern temperate template; regions shift them).
        dip: ``(center, width, depth)`` of a Gaussian NDVI dip (flowering, mowing); depth 0 = none.
        background: Background spectrum: ``"soil"``, ``"urban"`` or ``"water"``.
        forest_spectrum: Use the darker forest canopy spectrum instead of the crop one.
        s1: ``(vv0, vv_bio, vh0, vh_bio, wet)``: dB at zero cover, dB gained at full cover, and dB per
            unit soil wetness (both polarisations).
        drought_sensitivity: Exponent on the year's amplitude factor (0 = unaffected).

    """

    name: str
    ewoc_code: int
    base: float
    comps: tuple[tuple[float, float, float, float, float], ...]
    dip: tuple[float, float, float] = (0.0, 1.0, 0.0)
    background: str = "soil"
    forest_spectrum: bool = False
    s1: tuple[float, float, float, float, float] = (-15.0, 4.5, -23.5, 8.0, 2.5)
    drought_sensitivity: float = 1.0


#: The classes (labels are real WorldCereal ewoc codes, see ``class_mappings.json``).
CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(  # CROPTYPE28 "wheat" (winter wheat)
        "winter_cereal", 1101010001, 0.2, ((-55, 200, 10, 8, 0.25), (80, 185, 10, 8, 0.62))
    ),
    ClassSpec("spring_cereal", 1101020002, 0.2, ((110, 205, 8, 8, 0.6),)),  # "spring_barley"
    ClassSpec("maize", 1101060000, 0.2, ((160, 270, 9, 10, 0.68),), s1=(-15.5, 5.5, -24.0, 9.5, 2.5)),
    ClassSpec(  # "sorghum" (sorghum / millet)
        "sorghum_millet", 1101070000, 0.2, ((170, 280, 10, 12, 0.5),), s1=(-15.0, 5.0, -23.5, 8.5, 2.5)
    ),
    ClassSpec("soybean", 1106000020, 0.2, ((165, 258, 8, 7, 0.68),), s1=(-15.5, 4.0, -24.0, 8.5, 2.5)),
    ClassSpec(  # "rapeseed_rape" (winter rapeseed): green in autumn, flowering dip in April
        "rapeseed",
        1106000031,
        0.2,
        ((-110, 200, 10, 8, 0.45), (60, 175, 8, 8, 0.62)),
        dip=(112, 12, 0.15),
        s1=(-14.5, 5.0, -23.0, 8.0, 2.5),
    ),
    ClassSpec(  # LANDCOVER10 "grasslands"
        "grassland",
        2001000000,
        0.38,
        ((50, 300, 15, 15, 0.4),),
        dip=(165, 8, 0.12),
        s1=(-13.5, 2.5, -21.0, 4.5, 2.0),
    ),
    ClassSpec(  # LANDCOVER10 "trees"
        "forest",
        4000000000,
        0.55,
        ((110, 290, 10, 12, 0.3),),
        forest_spectrum=True,
        s1=(-9.0, 1.0, -14.0, 1.5, 0.5),
        drought_sensitivity=0.4,
    ),
    ClassSpec(  # LANDCOVER10 "built_up" (mixed with bare soil)
        "bare_urban", 1500000000, 0.1, ((100, 250, 15, 15, 0.05),), background="urban",
        s1=(-7.0, 0.0, -17.0, 0.0, 1.0), drought_sensitivity=0.0,
    ),
    ClassSpec(  # LANDCOVER10 "water"
        "water", 7000000000, -0.2, ((120, 260, 15, 15, 0.05),), background="water",
        s1=(-22.5, 0.0, -28.5, 0.0, 0.0), drought_sensitivity=0.0,
    ),
)  # fmt: skip
CLASS_INDEX = {c.name: i for i, c in enumerate(CLASSES)}


@dataclasses.dataclass(frozen=True)
class RegionSpec:
    """One synthetic region.

    Attributes:
        name: Region code (also the ``country`` meta value).
        lat: ``(min, max)`` latitude box in degrees.
        lon: ``(min, max)`` longitude box in degrees.
        start_month: First month of the agricultural-year window (0 = January).
        shift_days: Days added to every class calendar (southern hemisphere: about -183).
        class_mix: Class name to relative frequency.
        cloud: Monthly cloud probability (January first).
        temp_mean: Annual mean 2 m temperature (K) at ``elev_mean``.
        temp_amp: Half the seasonal temperature range (K).
        temp_peak_day: Day of year of the warmest point.
        precip: Monthly precipitation climatology (m per month, January first).
        elev_mean: Mean elevation (m).
        elev_amp: Amplitude of the smooth elevation field (m).
        slope_mean: Mean slope (degrees).
        soil_tint: Multiplier of the soil spectrum (e.g. red tropical soils).
        overrides: Per-class replacements of :class:`ClassSpec` fields (``base``, ``comps``, ``dip``).

    """

    name: str
    lat: tuple[float, float]
    lon: tuple[float, float]
    start_month: int
    shift_days: float
    class_mix: dict[str, float]
    cloud: tuple[float, ...]
    temp_mean: float
    temp_amp: float
    temp_peak_day: float
    precip: tuple[float, ...]
    elev_mean: float
    elev_amp: float
    slope_mean: float
    soil_tint: tuple[float, ...] = (1.0,) * 10
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


REGIONS: dict[str, RegionSpec] = {
    r.name: r
    for r in (
        RegionSpec(
            name="north_europe",
            lat=(49.0, 54.0),
            lon=(2.0, 14.0),
            start_month=10,
            shift_days=10,
            class_mix={
                "winter_cereal": 25, "spring_cereal": 8, "maize": 12, "rapeseed": 10, "grassland": 20,
                "forest": 12, "bare_urban": 8, "water": 5,
            },
            cloud=(0.8, 0.75, 0.65, 0.55, 0.5, 0.45, 0.45, 0.45, 0.5, 0.6, 0.75, 0.8),
            temp_mean=283.0,
            temp_amp=8.0,
            temp_peak_day=200,
            precip=(0.065, 0.05, 0.055, 0.045, 0.06, 0.07, 0.075, 0.07, 0.06, 0.065, 0.065, 0.07),
            elev_mean=150,
            elev_amp=120,
            slope_mean=2.5,
        ),
        RegionSpec(
            name="mediterranean",
            lat=(37.0, 44.0),
            lon=(-6.0, 15.0),
            start_month=9,
            shift_days=-25,
            class_mix={
                "winter_cereal": 28, "maize": 10, "sorghum_millet": 4, "rapeseed": 4, "grassland": 22,
                "forest": 15, "bare_urban": 12, "water": 5,
            },
            cloud=(0.45, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05, 0.07, 0.15, 0.3, 0.4, 0.45),
            temp_mean=289.0,
            temp_amp=8.0,
            temp_peak_day=205,
            precip=(0.07, 0.06, 0.05, 0.05, 0.035, 0.015, 0.008, 0.012, 0.035, 0.07, 0.09, 0.08),
            elev_mean=400,
            elev_amp=350,
            slope_mean=6.0,
            soil_tint=(1.05, 1.05, 1.08, 1.08, 1.05, 1.05, 1.03, 1.03, 1.05, 1.08),
            overrides={
                # green in winter and spring, dry in summer
                "grassland": {"base": 0.3, "comps": ((-90, 150, 12, 10, 0.42),), "dip": (0, 1, 0)},
                "forest": {"base": 0.5, "comps": ((20, 200, 15, 15, 0.25),)},
            },
        ),
        RegionSpec(
            name="us_midwest",
            lat=(38.0, 46.0),
            lon=(-98.0, -84.0),
            start_month=0,
            shift_days=5,
            class_mix={
                "maize": 30, "soybean": 28, "winter_cereal": 10, "spring_cereal": 4, "grassland": 12,
                "forest": 8, "bare_urban": 5, "water": 3,
            },
            cloud=(0.6, 0.55, 0.5, 0.45, 0.4, 0.3, 0.25, 0.25, 0.3, 0.35, 0.5, 0.6),
            temp_mean=284.0,
            temp_amp=13.0,
            temp_peak_day=200,
            precip=(0.03, 0.035, 0.06, 0.09, 0.11, 0.11, 0.1, 0.09, 0.08, 0.07, 0.055, 0.04),
            elev_mean=300,
            elev_amp=150,
            slope_mean=2.0,
            overrides={"winter_cereal": {"comps": ((-75, 185, 10, 8, 0.22), (70, 175, 10, 8, 0.6))}},
        ),
        RegionSpec(
            name="east_africa",
            lat=(-1.0, 5.0),
            lon=(30.0, 36.0),
            start_month=0,
            shift_days=20,
            class_mix={
                "sorghum_millet": 30, "maize": 22, "soybean": 5, "grassland": 18, "forest": 12,
                "bare_urban": 8, "water": 5,
            },
            cloud=(0.1, 0.12, 0.3, 0.45, 0.45, 0.25, 0.2, 0.3, 0.25, 0.3, 0.2, 0.12),
            temp_mean=296.5,
            temp_amp=1.5,
            temp_peak_day=60,
            precip=(0.01, 0.02, 0.06, 0.13, 0.15, 0.12, 0.13, 0.16, 0.14, 0.12, 0.06, 0.02),
            elev_mean=1200,
            elev_amp=350,
            slope_mean=3.5,
            soil_tint=(0.95, 1.0, 1.15, 1.15, 1.1, 1.05, 1.0, 1.0, 1.1, 1.2),
            overrides={
                "sorghum_millet": {"base": 0.18, "comps": ((150, 330, 12, 15, 0.45),)},
                "maize": {"base": 0.2, "comps": ((130, 290, 10, 12, 0.5),)},
                "soybean": {"base": 0.2, "comps": ((140, 260, 8, 8, 0.55),)},
                "grassland": {"base": 0.22, "comps": ((100, 320, 12, 15, 0.4),), "dip": (0, 1, 0)},
                "forest": {"base": 0.4, "comps": ((90, 330, 15, 15, 0.3),)},
            },
        ),
        RegionSpec(
            name="south_america",
            lat=(-38.0, -30.0),
            lon=(-64.0, -58.0),
            start_month=6,
            shift_days=-183,
            class_mix={
                "soybean": 30, "maize": 22, "winter_cereal": 15, "sorghum_millet": 5, "grassland": 15,
                "forest": 4, "bare_urban": 5, "water": 4,
            },
            cloud=(0.3, 0.3, 0.3, 0.3, 0.35, 0.4, 0.4, 0.35, 0.35, 0.35, 0.3, 0.3),
            temp_mean=290.0,
            temp_amp=7.0,
            temp_peak_day=15,
            precip=(0.11, 0.1, 0.11, 0.08, 0.05, 0.03, 0.03, 0.03, 0.05, 0.09, 0.1, 0.11),
            elev_mean=120,
            elev_amp=100,
            slope_mean=1.5,
        ),
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class YearAnomaly:
    """How one year departs from the climatology.

    Attributes:
        shift_days: Delay of every calendar (positive = late season).
        amp_factor: Multiplier of the NDVI amplitude (drought < 1).
        temp_offset: Added to temperature (K).
        precip_factor: Multiplier of precipitation.
        cloud_offset: Added to the cloud probability.

    """

    shift_days: float = 0.0
    amp_factor: float = 1.0
    temp_offset: float = 0.0
    precip_factor: float = 1.0
    cloud_offset: float = 0.0


#: Named anomalies; other years get a small random (but deterministic) anomaly.
YEAR_ANOMALIES: dict[int, YearAnomaly] = {
    2018: YearAnomaly(shift_days=-5, amp_factor=0.8, temp_offset=1.5, precip_factor=0.65, cloud_offset=-0.08),
    2019: YearAnomaly(),
    2020: YearAnomaly(shift_days=-7, amp_factor=1.0, temp_offset=0.8, precip_factor=0.95),
    2021: YearAnomaly(
        shift_days=18, amp_factor=1.03, temp_offset=-0.8, precip_factor=1.25, cloud_offset=0.08
    ),
    2022: YearAnomaly(shift_days=-5, amp_factor=0.72, temp_offset=1.6, precip_factor=0.6, cloud_offset=-0.08),
    2023: YearAnomaly(shift_days=6, amp_factor=0.95, temp_offset=1.0, precip_factor=1.1),
}
DEFAULT_YEARS: tuple[int, ...] = (2019, 2020, 2021, 2022)
#: Calibrated within-class variety (``experiments/synth/calibrate.py``): Fisher ratios (between-class over
#: within-class variance) of per-pixel VV / VH mean 0.25-0.30 and NDVI max / mean 0.6-0.8, against
#: 0.20-0.36 and 0.26-0.68 in the real French and East-African files; the clean model (variety 0) gives
#: 4-14, i.e. classes 10-40x easier to tell apart than real ones.
DEFAULT_VARIETY = 2.0


def class_names() -> dict[int, str]:
    """``ewoc_code`` -> synthetic class name."""
    return {c.ewoc_code: c.name for c in CLASSES}
