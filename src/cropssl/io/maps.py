"""Crop maps as files: a cube's grid, the map as a CF NetCDF dataset, its PNG, and atomic writing of both.

The writing side of :mod:`cropssl.predict`, next to the cube reader (:mod:`cropssl.data.ingest.netcdf`):
the map keeps the input's ``x`` / ``y`` coordinates and its ``crs`` (or ``spatial_ref``) variable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

#: Colour of no-data pixels in map PNGs (no class colour uses it).
NODATA_COLOR = "#3b3b3b"


def cube_grid(path: Path) -> dict[str, Any]:
    """The grid of a cube: dims, shape, coordinates (copied) and its CRS variable, if any."""
    import xarray as xr

    from cropssl.data.ingest.netcdf import CRS_VARIABLES, find_dims

    with xr.open_dataset(path, engine="h5netcdf", decode_cf=True, mask_and_scale=False) as ds:
        _, ydim, xdim = find_dims(ds, path)
        crs_name = next((n for n in CRS_VARIABLES if n in ds.variables), None)
        return {
            "dims": (ydim, xdim),
            "shape": (ds.sizes[ydim], ds.sizes[xdim]),
            "x": ds[xdim].copy(deep=True),
            "y": ds[ydim].copy(deep=True),
            "x_vals": ds[xdim].to_numpy(),
            "y_vals": ds[ydim].to_numpy(),
            "crs_name": crs_name,
            "crs": ds[crs_name].copy(deep=True) if crs_name else None,
        }


def map_dataset(
    cls: np.ndarray, proba: np.ndarray, names: list[str], grid: dict[str, Any], attrs: dict[str, Any]
) -> Any:
    """The map as a CF dataset: ``class`` (flags), ``probability``, ``class_name``, the cube's CRS."""
    import xarray as xr

    ydim, xdim = grid["dims"]
    k = len(names)
    crs = {"grid_mapping": grid["crs_name"]} if grid["crs_name"] else {}
    class_attrs = {
        "long_name": "predicted class index (-1 = no data)",
        "nodata": np.int16(-1),
        "flag_values": np.arange(k, dtype=np.int16),
        "flag_meanings": " ".join(re.sub(r"\s+", "_", n) for n in names),
        "class_names": json.dumps(names),
        **crs,
    }
    data_vars: dict[str, Any] = {
        "class": ((ydim, xdim), cls, class_attrs),
        "probability": (
            ("class_index", ydim, xdim),
            proba,
            {"long_name": "class probability", "units": "1", **crs},
        ),
        "class_name": (("class_index",), np.asarray(names, dtype=object), {"long_name": "class name"}),
    }
    if grid["crs"] is not None:
        data_vars[grid["crs_name"]] = grid["crs"]
    coords = {"class_index": np.arange(k, dtype=np.int16), xdim: grid["x"], ydim: grid["y"]}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def write_map(
    out: Path, png_path: Path, ds: Any, cls: np.ndarray, grid: dict[str, Any], names: list[str], title: str
) -> None:
    """Write the map's NetCDF and PNG atomically (neither is left half-written)."""
    from cropssl.io.atomic import atomic_path

    # no _FillValue on `class`: it would decode to float with NaN; -1 is documented in its attributes
    encoding = {"class": {"_FillValue": None}, "probability": {"_FillValue": np.float32(np.nan)}}
    with atomic_path(out) as tmp_nc:
        ds.to_netcdf(tmp_nc, engine="h5netcdf", encoding=encoding)
        with atomic_path(png_path) as tmp_png:
            write_png(tmp_png, cls, grid["x_vals"], grid["y_vals"], names, title)


def write_png(
    path: Path, cls: np.ndarray, x: np.ndarray, y: np.ndarray, classes: list[str], title: str
) -> None:
    """A PNG of the class map with a legend of the classes present (pixel counts) and no-data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k = len(classes)
    base = plt.get_cmap("tab20" if k > 10 else "tab10")
    colors = [base(i % base.N) for i in range(k)]
    cmap = ListedColormap(colors).with_extremes(bad=NODATA_COLOR)
    data = np.ma.masked_less(cls, 0)
    dx = (x[1] - x[0]) if len(x) > 1 else 1.0
    dy = (y[1] - y[0]) if len(y) > 1 else -1.0
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=k - 0.5, extent=extent, interpolation="nearest")
    present = np.unique(cls[cls >= 0])
    counts = {int(c): int((cls == c).sum()) for c in present}
    handles = [Patch(color=colors[c], label=f"{classes[c]} ({counts[c]} px)") for c in present]
    if (cls < 0).any():
        handles.append(Patch(color=NODATA_COLOR, label=f"no data ({int((cls < 0).sum())} px)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
