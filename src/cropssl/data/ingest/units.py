"""From the values a file stores to physical units, with a loud check of the physical range.

A file's band is stored in one *encoding*:

* the WorldCereal digital numbers (the default, when a file declares no ``units``): S1 ``DN`` with
  ``dB = 20 log10(DN) - 83``, S2 reflectance x 1e4, AgERA5 temperature ``K x 100``, precipitation
  ``m x 1e5``, elevation m, slope degrees; 65535 is no-data;
* or the units a NetCDF variable declares in its CF ``units`` attribute (or the user with
  ``--units BAND=UNIT``): S1 in ``dB`` or ``linear`` power, S2 as a reflectance fraction ``1``, temperature
  in ``K`` or ``degC``, precipitation in ``m`` or ``mm``.

Every converted value is then checked against the band's physical range. Values outside it are the sign
of a wrong decoding (int16 without ``_Unsigned``: no-data 65535 reads as -1; S1 already in dB read as
digital numbers; Celsius read as Kelvin x 100) and are refused by default, naming the band, the count,
the range seen and the likely fix; ``on_invalid="mask"`` masks and counts them instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cropssl.data.ingest.errors import InputFormatError

#: No-data value of WorldCereal extractions (raw digital numbers).
NODATA = 65535

_S1 = ("VV", "VH")
_S2 = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")

#: Accepted ``units`` spellings per band kind -> canonical unit name. ``""`` = WorldCereal encoding.
_UNITS: dict[str, dict[str, str]] = {
    "s1": {
        "": "dn",
        "dn": "dn",
        "db": "db",
        "decibel": "db",
        "decibels": "db",
        "linear": "linear",
        "power": "linear",
        "1": "linear",
    },
    "s2": {
        "": "x1e4",
        "dn": "x1e4",
        "reflectance x 1e4": "x1e4",
        "x1e4": "x1e4",
        "1": "fraction",
        "reflectance": "fraction",
        "fraction": "fraction",
    },
    "temperature_2m": {
        "": "dn",
        "dn": "dn",
        "k": "k",
        "kelvin": "k",
        "degc": "degc",
        "c": "degc",
        "celsius": "degc",
        "°c": "degc",
        "deg_c": "degc",
    },
    "total_precipitation": {"": "dn", "dn": "dn", "m": "m", "mm": "mm"},
    "elevation": {"": "m", "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m"},
    "slope": {"": "deg", "deg": "deg", "degree": "deg", "degrees": "deg", "°": "deg"},
}

#: Physical range of every band after conversion (schema units), inclusive.
PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    **{b: (-80.0, 40.0) for b in _S1},
    **{b: (0.0, 65534.0) for b in _S2},
    "temperature_2m": (170.0, 340.0),
    "total_precipitation": (0.0, 5.0),
    "elevation": (-500.0, 9000.0),
    "slope": (0.0, 90.0),
}


def band_kind(band: str) -> str:
    """The units family of a schema band (``s1``, ``s2`` or the band's own name)."""
    return "s1" if band in _S1 else "s2" if band in _S2 else band


def canonical_unit(band: str, units: str | None, where: str = "") -> str:
    """The canonical encoding of ``band`` declared as ``units`` (``None`` / ``""``: WorldCereal's).

    Raises:
        InputFormatError: the unit is not one cropssl knows for this band (lists the accepted ones).

    """
    table = _UNITS[band_kind(band)]
    key = str(units or "").strip().lower()
    if key not in table:
        accepted = sorted(k for k in table if k)
        raise InputFormatError(
            f"{where}band {band}: unknown units {units!r}; accepted: {accepted} (or none for the WorldCereal "
            "encoding); declare them in the variable's `units` attribute or with --units BAND=UNIT"
        )
    return table[key]


def uses_nodata_sentinel(band: str, unit: str) -> bool:
    """Whether 65535 means no-data for this encoding (the WorldCereal digital numbers)."""
    return (band_kind(band), unit) in {
        ("s1", "dn"),
        ("s2", "x1e4"),
        ("temperature_2m", "dn"),
        ("total_precipitation", "dn"),
        ("elevation", "m"),
        ("slope", "deg"),
    }


def convert(band: str, values: np.ndarray, unit: str) -> np.ndarray:
    """Convert stored values of ``band`` in canonical ``unit`` to schema units (NaN stays NaN)."""
    v = np.asarray(values, np.float64)
    kind = band_kind(band)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "s1":
            if unit == "dn":
                return np.where(v > 0, 20 * np.log10(np.where(v > 0, v, 1.0)) - 83, -np.inf)
            if unit == "linear":
                return np.where(v > 0, 10 * np.log10(np.where(v > 0, v, 1.0)), -np.inf)
            return v
        if kind == "s2":
            return v * 1e4 if unit == "fraction" else v
        if kind == "temperature_2m":
            return v / 100 if unit == "dn" else v + 273.15 if unit == "degc" else v
        if kind == "total_precipitation":
            return v / 1e5 if unit == "dn" else v / 1000 if unit == "mm" else v
    return v


def _hint(band: str, unit: str, raw: np.ndarray, bad: np.ndarray) -> str:
    kind = band_kind(band)
    r = raw[bad]
    if kind == "s2" and (r < 0).any():
        return (
            'negative reflectance: uint16 data stored as int16 without `_Unsigned = "true"` read 65535 '
            "(no-data) as -1; declare `_Unsigned` / `_FillValue` on the variable"
        )
    if kind == "s1" and unit == "dn" and (r <= 0).any():
        neg = (r < 0).any()
        return "S1 digital numbers must be > 0 (dB = 20 log10(DN) - 83)" + (
            "; negative values look like dB: declare units='dB' (or --units VV=dB,VH=dB)"
            if neg
            else "; a DN of 0 is not a valid backscatter (a fill value not declared as `_FillValue`?)"
        )
    if kind == "temperature_2m" and unit == "dn" and np.nanmax(np.abs(r)) < 100:
        return "values look like degrees Celsius: declare units='degC' (or --units temperature_2m=degC)"
    if kind == "temperature_2m" and unit == "dn" and np.nanmin(r) > 170 and np.nanmax(r) < 340:
        return "values look like Kelvin already: declare units='K' (or --units temperature_2m=K)"
    return "check the file's encoding (units, scale_factor / add_offset, _FillValue)"


def check_range(
    band: str,
    physical: np.ndarray,
    valid: np.ndarray,
    raw: np.ndarray,
    unit: str,
    *,
    where: str,
    on_invalid: str = "error",
) -> np.ndarray:
    """Values of ``band`` outside :data:`PHYSICAL_RANGE` (among ``valid``): refuse them or mask them.

    Args:
        band: Schema band.
        physical: Converted values.
        valid: Where values are present (not no-data); only these are checked.
        raw: The stored values (for the message).
        unit: Canonical encoding of the stored values.
        where: The file (and variable) for the message.
        on_invalid: ``"error"`` (default) or ``"mask"``.

    Returns:
        Boolean array, True where a present value is out of range (all False when none).

    Raises:
        InputFormatError: with ``on_invalid="error"`` when any present value is out of range.

    """
    lo, hi = PHYSICAL_RANGE[band]
    bad = valid & ~((physical >= lo) & (physical <= hi))
    if band_kind(band) == "s2" and valid.any() and not bad.any():
        v = raw[valid]
        if np.nanmax(v) <= 2.0 and np.any(v != np.round(v)) and unit == "x1e4":
            raise InputFormatError(
                f"{where}band {band}: values lie in [{np.nanmin(v):.3g}, {np.nanmax(v):.3g}]: they look like "
                "reflectance fractions, not reflectance x 1e4; declare units='1' on the variable (or "
                f"--units {band}=1)"
            )
    if bad.any():
        if on_invalid == "mask":
            return bad
        r = raw[bad]
        raise InputFormatError(
            f"{where}band {band}: {int(bad.sum())} of {int(valid.sum())} values out of the physical range "
            f"[{lo:g}, {hi:g}] after conversion (stored values seen {np.nanmin(r):.6g} .. "
            f"{np.nanmax(r):.6g}, encoding {unit!r}). {_hint(band, unit, raw, bad)}. To mask such values "
            "instead, pass --out-of-range mask."
        )
    return bad


def parse_units(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"VV=dB,VH=dB"`` (or a mapping) -> ``{band: unit}``; band names may be any alias."""
    from cropssl.schema import band_for_name

    if not spec:
        return {}
    items = (
        spec.items() if isinstance(spec, Mapping) else (p.split("=", 1) for p in str(spec).split(",") if p)
    )
    out: dict[str, str] = {}
    for item in items:
        try:
            name, unit = item
        except ValueError:
            raise InputFormatError(f"--units: expected BAND=UNIT pairs, got {spec!r}") from None
        band = band_for_name(name)
        if band is None or band == "NDVI":
            raise InputFormatError(f"--units: unknown band {name!r}")
        canonical_unit(band, unit, "--units: ")
        out[band] = unit
    return out
