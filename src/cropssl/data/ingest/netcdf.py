"""NetCDF cubes as users have them: CF decoding, band aliases, any dim order, 2-D static layers.

:func:`open_cube` is the one reader of cube files (``cropssl-shard`` and ``cropssl-predict`` use it):

* variables are matched to schema bands through :data:`cropssl.schema.BAND_ALIASES` (WorldCereal
  ``S2-L2A-B02``, openEO ``B02``, Presto ``B2``, ``DEM``, ...); a band named twice is refused;
* CF encodings are decoded by :func:`decode_cf` (``_Unsigned``, ``_FillValue`` / ``missing_value``,
  ``valid_min`` / ``valid_max`` / ``valid_range``, ``scale_factor`` / ``add_offset``), so an int16 openEO
  cube with ``_Unsigned = "true"`` reads its no-data 65535 as no-data, not as -1;
* the time dimension is ``t`` or ``time`` (or any dimension with a datetime coordinate), the spatial ones
  ``(y, x)`` in a CRS (a ``crs`` / ``spatial_ref`` variable) or ``(lat, lon)`` in degrees, in any order;
* static layers (``elevation``, ``slope``) may be 2-D ``(y, x)``; they are repeated over time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.data.ingest.errors import InputFormatError
from cropssl.schema import band_for_name

TIME_DIMS = ("t", "time")
XY_DIMS = (("y", "x"), ("lat", "lon"), ("latitude", "longitude"))
CRS_VARIABLES = ("crs", "spatial_ref")


def _attr_values(attrs: Mapping[str, Any], key: str) -> np.ndarray | None:
    if key not in attrs:
        return None
    return np.atleast_1d(np.asarray(attrs[key]))


def decode_cf(values: np.ndarray, attrs: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Decode one variable's stored values as CF says: ``(decoded float64, no-data mask)``.

    Applies, in CF's order: ``_Unsigned = "true"`` (signed integers reinterpreted as unsigned),
    ``_FillValue`` and ``missing_value`` (no-data), ``valid_min`` / ``valid_max`` / ``valid_range``
    (outside = no-data), then ``scale_factor`` and ``add_offset``. No-data positions keep their decoded
    value (never used: the mask says missing); NaN in float data is *not* put in the mask (callers count
    it as non-finite).

    Args:
        values: The stored array (as read with ``mask_and_scale=False``).
        attrs: The variable's attributes.

    Returns:
        ``(values, nodata)`` of the input's shape.

    """
    v = np.asarray(values)
    signed = v.dtype.kind == "i"
    if signed and str(attrs.get("_Unsigned", "")).strip().lower() == "true":
        unsigned = np.dtype(f"u{v.dtype.itemsize}")
        v = v.view(unsigned)

        def as_stored(a: np.ndarray) -> np.ndarray:
            return a.astype(values.dtype).view(unsigned)
    else:

        def as_stored(a: np.ndarray) -> np.ndarray:
            return a.astype(v.dtype)

    nodata = np.zeros(v.shape, bool)
    for key in ("_FillValue", "missing_value"):
        fill = _attr_values(attrs, key)
        if fill is None:
            continue
        fv = as_stored(fill)
        if v.dtype.kind == "f":
            if np.isnan(fv).any():
                nodata |= np.isnan(v)
            fv = fv[~np.isnan(fv)]
        nodata |= np.isin(v, fv)
    vmin, vmax = _attr_values(attrs, "valid_min"), _attr_values(attrs, "valid_max")
    vrange = _attr_values(attrs, "valid_range")
    if vrange is not None and vrange.size == 2:
        vmin, vmax = vrange[:1], vrange[1:]
    if vmin is not None:
        nodata |= v < as_stored(vmin)[0]
    if vmax is not None:
        nodata |= v > as_stored(vmax)[0]
    out = v.astype(np.float64)
    scale, offset = _attr_values(attrs, "scale_factor"), _attr_values(attrs, "add_offset")
    if scale is not None:
        out = out * float(scale[0])
    if offset is not None:
        out = out + float(offset[0])
    return out, nodata


@dataclasses.dataclass
class Cube:
    """A cube's band values as ``[N, L]`` pixel series (pixel ``n = row * nx + col``).

    Attributes:
        path: The file.
        values: Band -> ``[N, L]`` float64 decoded values (CF applied; units of the file).
        nodata: Band -> ``[N, L]`` bool, True where CF says no-data.
        variables: Band -> the file's variable name.
        units: Band -> the variable's ``units`` attribute ("" when absent).
        times: ``[L]`` datetime64 of the time axis.
        shape: ``(ny, nx)``.
        dims: Names of the ``(time, y, x)`` dimensions in the file.
        latlon: ``[N, 2]`` degrees.
        crs_variable: Name of the CRS variable (``None`` for lat/lon cubes).
        other_variables: Data variables that are no band (listed in errors).

    """

    path: Path
    values: dict[str, np.ndarray]
    nodata: dict[str, np.ndarray]
    variables: dict[str, str]
    units: dict[str, str]
    times: np.ndarray
    shape: tuple[int, int]
    dims: tuple[str, str, str]
    latlon: np.ndarray
    crs_variable: str | None
    other_variables: list[str]

    @property
    def n_pixels(self) -> int:
        """Pixels ``ny * nx``."""
        return self.shape[0] * self.shape[1]


def _crs_wkt(ds: Any, path: Path) -> tuple[str, str]:
    for name in CRS_VARIABLES:
        if name in ds.variables:
            attrs = ds[name].attrs
            for key in ("crs_wkt", "spatial_ref"):
                if key in attrs:
                    return name, str(attrs[key])
    raise InputFormatError(
        f"{path}: a cube on (y, x) needs its CRS: a 'crs' or 'spatial_ref' variable with a 'crs_wkt' "
        "attribute (or use lat/lon dimensions in degrees)"
    )


def find_dims(ds: Any, path: Path) -> tuple[str, str, str]:
    """Names of the ``(time, y, x)`` dimensions of an open dataset (see the module docstring)."""
    dims = set(ds.dims)
    tdim = next((d for d in TIME_DIMS if d in dims), None)
    if tdim is None:
        tdim = next(
            (d for d in ds.dims if d in ds.coords and np.issubdtype(ds[d].dtype, np.datetime64)), None
        )
    xy = next((p for p in XY_DIMS if set(p) <= dims), None)
    if tdim is None or xy is None:
        raise InputFormatError(
            f"{path}: a cube needs a time dimension ('t' or 'time', or one with dates) and spatial "
            f"dimensions (y, x) or (lat, lon); found dimensions {tuple(ds.dims)}"
        )
    if not np.issubdtype(ds[tdim].dtype, np.datetime64):
        raise InputFormatError(
            f"{path}: the time coordinate {tdim!r} holds {ds[tdim].dtype} values, not dates (CF 'units' such "
            "as 'days since 2020-01-01' are decoded automatically)"
        )
    return tdim, xy[0], xy[1]


def open_cube(path: str | Path) -> Cube:
    """Read every band of a NetCDF cube (see the module docstring for what is accepted).

    Raises:
        InputFormatError: the file is unreadable, has no band variable, names a band twice, or its
            dimensions / CRS are not those of a cube -- the message names the file and what it holds.

    """
    import xarray as xr

    path = Path(path)
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", decode_cf=True, mask_and_scale=False)
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"{path}: cannot open as a NetCDF4 cube ({exc}); is it truncated?") from exc
    with ds:
        tdim, ydim, xdim = find_dims(ds, path)
        ny, nx, length = ds.sizes[ydim], ds.sizes[xdim], ds.sizes[tdim]
        n = ny * nx
        values: dict[str, np.ndarray] = {}
        nodata: dict[str, np.ndarray] = {}
        variables: dict[str, str] = {}
        units: dict[str, str] = {}
        other: list[str] = []
        for name in ds.data_vars:
            band = band_for_name(str(name))
            if band is None or band == "NDVI":
                if name not in CRS_VARIABLES:
                    other.append(str(name))
                continue
            if band in variables:
                raise InputFormatError(
                    f"{path}: variables {variables[band]!r} and {name!r} are both band {band}; keep one"
                )
            var = ds[name]
            vdims = set(var.dims)
            if vdims == {ydim, xdim}:
                arr = np.broadcast_to(var.transpose(ydim, xdim).to_numpy()[None], (length, ny, nx))
            elif vdims == {tdim, ydim, xdim}:
                arr = var.transpose(tdim, ydim, xdim).to_numpy()
            else:
                raise InputFormatError(
                    f"{path}: variable {name!r} has dimensions {var.dims}; a band must be on "
                    f"({tdim}, {ydim}, {xdim}) or, for static layers, ({ydim}, {xdim})"
                )
            v, nd = decode_cf(arr, var.attrs)
            values[band] = v.reshape(length, n).T
            nodata[band] = nd.reshape(length, n).T
            variables[band] = str(name)
            units[band] = str(var.attrs.get("units", "") or "")
        if not values:
            raise InputFormatError(
                f"{path}: no band variables found; it has {sorted(map(str, ds.data_vars))}. Expected names "
                "like S2-L2A-B02 / B02 / B2, S1-SIGMA0-VV / VV, AGERA5-TMEAN / temperature_2m, elevation"
            )
        times = ds[tdim].to_numpy()
        crs_name = None
        if ydim == "y":
            crs_name, wkt = _crs_wkt(ds, path)
            from pyproj import CRS, Transformer

            xs, ys = np.meshgrid(ds[xdim].to_numpy(), ds[ydim].to_numpy())
            to_wgs84 = Transformer.from_crs(CRS.from_wkt(wkt), "EPSG:4326", always_xy=True)
            lon, lat = to_wgs84.transform(xs.ravel(), ys.ravel())
        else:
            lon, lat = (a.ravel() for a in np.meshgrid(ds[xdim].to_numpy(), ds[ydim].to_numpy()))
    return Cube(
        path=path,
        values=values,
        nodata=nodata,
        variables=variables,
        units=units,
        times=times,
        shape=(int(ny), int(nx)),
        dims=(tdim, ydim, xdim),
        latlon=np.stack([lat, lon], 1),
        crs_variable=crs_name,
        other_variables=other,
    )


def cube_variables(path: str | Path) -> list[str]:
    """Names of a NetCDF file's data variables (for error messages)."""
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf", decode_cf=False) as ds:
        return sorted(map(str, ds.data_vars))
