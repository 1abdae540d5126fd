"""NetCDF **cubes** ``(t, y, x)``: every pixel is an (unlabelled) sample; lat/lon from the CRS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cropssl.data.ingest.common import (
    IngestReport,
    InputFormatError,
    cut_windows,
    finish,
    to_physical,
    window_starts,
)
from cropssl.data.ingest.long import COLUMNS, month_index
from cropssl.schema import NO_LABEL, PixelSamples


def _crs_wkt(ds) -> str:
    for name in ("crs", "spatial_ref"):
        if name in ds.variables:
            attrs = ds[name].attrs
            for key in ("crs_wkt", "spatial_ref"):
                if key in attrs:
                    return str(attrs[key])
    raise InputFormatError("the cube has no CRS (expected a 'crs' or 'spatial_ref' variable with 'crs_wkt')")


def read_cube(path: str | Path, timesteps: int) -> tuple[PixelSamples, IngestReport]:
    """Read a NetCDF cube; pixel ``(iy, ix)`` becomes sample ``{stem}_{iy}_{ix}``."""
    import xarray as xr
    from pyproj import CRS, Transformer

    try:
        ds = xr.open_dataset(path, engine="h5netcdf", decode_cf=True, mask_and_scale=False)
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"{path}: cannot open as a NetCDF4 cube ({exc})") from exc
    with ds:
        for dim in ("t", "y", "x"):
            if dim not in ds.dims:
                raise InputFormatError(f"{path}: cube needs dimensions (t, y, x); found {tuple(ds.dims)}")
        ny, nx, length = ds.sizes["y"], ds.sizes["x"], ds.sizes["t"]
        n = ny * nx
        raw: dict[str, np.ndarray] = {}
        for band, col in COLUMNS.items():
            if col in ds.data_vars:
                v = ds[col].transpose("t", "y", "x").to_numpy().astype(np.float64)
                raw[band] = v.reshape(length, n).T
        if not raw:
            raise InputFormatError(f"{path}: no band variables; expected some of {sorted(COLUMNS.values())}")
        months = month_index(ds["t"].to_numpy())
        xs, ys = np.meshgrid(ds["x"].to_numpy(), ds["y"].to_numpy())
        to_wgs84 = Transformer.from_crs(CRS.from_wkt(_crs_wkt(ds)), "EPSG:4326", always_xy=True)
        lon, lat = to_wgs84.transform(xs.ravel(), ys.ravel())
    if np.any(np.diff(months) != 1):
        raise InputFormatError(f"{path}: the t axis must be consecutive months, got month indices {months}")
    x, mask, n_nonfinite = to_physical(raw, (n, length))
    first, last = np.zeros(n, np.int64), np.full(n, length - 1, np.int64)
    start = window_starts(first, last, (first + last + 1) // 2, timesteps)
    xw, mw, n_padded = cut_windows(x, mask, start, timesteps)
    origin = int(months[0])
    month = (origin + start[:, None] + np.arange(timesteps)[None]) % 12
    stem = Path(path).stem
    iy, ix = np.divmod(np.arange(n), nx)
    meta = {
        "sample_id": np.array([f"{stem}_{a:04d}_{b:04d}" for a, b in zip(iy, ix)], dtype=object),
        "source": np.full(n, Path(path).name, dtype=object),
        "ref_id": np.full(n, stem, dtype=object),
        "country": np.full(n, "", dtype=object),
        "h3_l3_cell": np.full(n, "", dtype=object),
    }
    notes = [f"{n_padded} pixels cover fewer than {timesteps} months: padded as missing"] if n_padded else []
    return finish(
        fmt="cube",
        path=str(path),
        n_rows=n,
        x=xw,
        mask=mw,
        month=month,
        latlon=np.stack([lat, lon], 1),
        label=np.full(n, NO_LABEL),
        year=(origin + start + timesteps - 1) // 12,
        meta=meta,
        n_nonfinite=n_nonfinite,
        notes=notes,
    )
