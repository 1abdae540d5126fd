"""Ingest time per 10,000 pixels for every layout a user brings, and the report of one openEO cube.

Layouts built in a temporary folder from the shared real files, the way users' files come:

* WorldCereal long parquet (monthly) and the same rows split into dekads (3 rows per month, aggregated
  back to months by cropssl);
* WorldCereal wide parquet, and an older wide layout (no ``sample_id``, labels in ``CROPTYPE_LABEL``);
* the WorldCereal NetCDF cube, and an openEO / Presto-named cube (int16 + ``_Unsigned`` + ``_FillValue``,
  2-D static layers, ``time`` dimension, 20 months of which a window of 12 is chosen).

Run: ``python experiments/benchmarks/bench_ingest.py [--data DIR] [--report-json PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from cropssl.data.ingest import IngestOptions, read_input
from cropssl.schema import BAND_ALIASES

LONG = "2022_FRA_LPIS_month.geoparquet"
WIDE = "2017_east_africa_public_month_wide.parquet"
CUBE = "2021_BEL_31UFS_month_cube_100x100.nc"


def dekadal(src: Path, out: Path) -> Path:
    """The long file with three rows per month (days 1, 11, 21; same values)."""
    df = pd.read_parquet(src)
    parts = []
    for day in (1, 11, 21):
        d = df.copy()
        d["timestamp"] = d["timestamp"] + pd.Timedelta(days=day - 1)
        parts.append(d)
    pd.concat(parts).sort_values(["sample_id", "timestamp"]).to_parquet(out)
    return out


def old_wide(src: Path, out: Path) -> tuple[Path, Path]:
    """The wide file without ``sample_id``, labels as small integers in ``CROPTYPE_LABEL`` + a label map."""
    df = pd.read_parquet(src)
    codes = {int(c): i + 1 for i, c in enumerate(sorted(df["ewoc_code"].unique()))}
    df.drop(columns=["sample_id", "ewoc_code"]).assign(CROPTYPE_LABEL=df["ewoc_code"].map(codes)).to_parquet(
        out
    )
    label_map = out.with_suffix(".json")
    label_map.write_text(json.dumps({str(v): k for k, v in codes.items()}))
    return out, label_map


def openeo_cube(src: Path, out: Path) -> Path:
    """The cube renamed to Presto / openEO names, int16 + _Unsigned + _FillValue, 2-D statics, 20 months."""
    with xr.open_dataset(src, engine="h5netcdf") as ds:
        ds = ds.load()
    extra = ds.isel(t=slice(0, 8)).assign_coords(t=pd.date_range("2021-11-01", periods=8, freq="MS"))
    ds = xr.concat([ds, extra], dim="t", data_vars="minimal", coords="minimal", compat="override")
    ds = ds.rename({names[0]: b for b, names in BAND_ALIASES.items() if names[0] in ds}).rename(t="time")
    for static in ("elevation", "slope"):
        ds[static] = ds[static].isel(time=0, drop=True)
    ds.encoding = {}
    enc = {}
    for v in ds.data_vars:
        if v != "crs":
            ds[v] = ds[v].astype(np.uint16)
            ds[v].attrs.pop("_Unsigned", None)
            enc[v] = {"dtype": "int16", "_Unsigned": "true", "_FillValue": np.int16(-1), "zlib": True}
    ds.to_netcdf(out, engine="h5netcdf", encoding=enc)
    return out


def best_time(fn, repeat: int = 3) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench(data: Path, tmp: Path) -> tuple[dict[str, str], dict]:
    """Seconds per 10,000 pixels for each layout; the ingest report of the openEO cube."""
    old, label_map = old_wide(data / WIDE, tmp / "old_wide.parquet")
    cases = {
        "long parquet (monthly)": (data / LONG, IngestOptions()),
        "long parquet (dekadal -> months)": (dekadal(data / LONG, tmp / "dekad.parquet"), IngestOptions()),
        "long parquet (dekadal, native 36 steps)": (tmp / "dekad.parquet", IngestOptions(cadence="native")),
        "wide parquet": (data / WIDE, IngestOptions()),
        "wide parquet (old layout + label map)": (
            old,
            IngestOptions(label_column="CROPTYPE_LABEL", label_map=label_map),
        ),
        "NetCDF cube (WorldCereal)": (data / CUBE, IngestOptions()),
        "NetCDF cube (openEO int16, 20 months, window)": (
            openeo_cube(data / CUBE, tmp / "openeo.nc"),
            IngestOptions(start="2020-11", end="2021-10"),
        ),
    }
    rows: dict[str, str] = {}
    report = {}
    for name, (path, opts) in cases.items():
        dt, (samples, rep) = best_time(lambda p=path, o=opts: read_input(p, options=o))
        per = dt / len(samples) * 1e4
        rows[f"ingest {name}"] = (
            f"{len(samples)} px, T={samples.timesteps}: {dt:.2f} s = {per:.2f} s per 10,000 px"
        )
        if "openEO" in name:
            report = dataclasses.asdict(rep)
            report["path"] = Path(report["path"]).name
    return rows, report


def main() -> None:
    """Print the table (and optionally write the openEO cube's ingest report)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/worldcereal")
    p.add_argument("--report-json", default=None, help="write the openEO cube's ingest report here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows, report = bench(Path(args.data), Path(tmp))
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(report, indent=2))
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
