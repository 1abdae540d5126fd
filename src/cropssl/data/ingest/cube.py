"""NetCDF **cubes**: every pixel is an (unlabelled) sample; lat/lon from the CRS (see :mod:`.netcdf`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cropssl.data.ingest.common import (
    IngestOptions,
    IngestReport,
    choose_windows,
    count_nonfinite,
    cut_windows,
    finish,
    resolve_units,
    to_physical,
    window_months,
    window_summary,
)
from cropssl.data.ingest.netcdf import open_cube
from cropssl.data.ingest.series import regrid
from cropssl.schema import NO_LABEL, PixelSamples


def read_cube(path: str | Path, options: IngestOptions) -> tuple[PixelSamples, IngestReport]:
    """Read a NetCDF cube; pixel ``(row, col)`` becomes sample ``{stem}_{row:04d}_{col:04d}``.

    The sample meta carries ``row`` and ``col`` (the pixel's position in the grid). All pixels share one
    window: the middle ``timesteps`` months of the cube by default, or the window the options fix (which
    must lie inside the cube's months).
    """
    where = f"{path}: "
    cube = open_cube(path)
    n = cube.n_pixels
    units = resolve_units(list(cube.values), cube.units, options.units, where)
    n_nonfinite = count_nonfinite(cube.values, cube.nodata)
    series = regrid(cube.values, cube.nodata, cube.times, units, options.cadence, where)
    x, mask, n_bad, unit_notes = to_physical(series, units, where=where, on_invalid=options.on_out_of_range)
    k = series.steps_per_month
    steps = x.shape[1]
    origin = np.full(n, series.origin, np.int64)
    first, last = np.zeros(n, np.int64), np.full(n, steps - 1, np.int64)
    start, window, rule = choose_windows(
        options,
        origin=origin,
        first=first,
        last=last,
        centre=(first + last + 1) // 2,
        has_centre=np.zeros(n, bool),
        steps_per_month=k,
        where=where,
        common_axis=True,
    )
    xw, mw, n_padded = cut_windows(x, mask, start, window)
    month = window_months(origin, start, window, k)
    stem = Path(path).stem
    nx = cube.shape[1]
    row, col = np.divmod(np.arange(n), nx)
    meta = {
        "sample_id": np.array([f"{stem}_{a:04d}_{b:04d}" for a, b in zip(row, col)], dtype=object),
        "source": np.full(n, Path(path).name, dtype=object),
        "ref_id": np.full(n, stem, dtype=object),
        "country": np.full(n, "", dtype=object),
        "h3_l3_cell": np.full(n, "", dtype=object),
        "row": row.astype(object),
        "col": col.astype(object),
    }
    notes = [*series.notes, *unit_notes]
    if n_padded:
        notes.append(f"{n_padded} pixels cover fewer than {window} steps: padded as missing")
    if steps > window and options.start is None and options.season_end_month is None:
        notes.append(
            f"the cube has {steps} steps; the window keeps {window} ({rule}); choose another with "
            "--start/--end or --season-end-month"
        )
    if any("L1C" in v.upper() for v in cube.variables.values()):
        notes.append("Sentinel-2 is Level-1C (top of atmosphere), not L2A")
    return finish(
        fmt="cube",
        path=path,
        n_rows=n,
        x=xw,
        mask=mw,
        month=month,
        latlon=cube.latlon,
        label=np.full(n, NO_LABEL),
        year=(series.origin + (start + window - 1) // k) // 12,
        meta=meta,
        n_nonfinite=n_nonfinite,
        notes=notes,
        cadence=series.cadence,
        window=window_summary(origin, start, window, k, rule),
        variables=cube.variables,
        units=units,
        n_out_of_range=n_bad,
    )
