"""Readers of real inputs into :class:`~cropssl.schema.PixelSamples` (physical units + missing mask).

Three formats, all found in WorldCereal extractions:

* ``long`` parquet: one row per (sample, month) -- :func:`~cropssl.data.ingest.long.read_long`;
* ``wide`` parquet: one row per sample, ``{SENSOR}-{BAND}-ts{t}-{res}m`` columns --
  :func:`~cropssl.data.ingest.wide.read_wide`;
* NetCDF ``cube`` ``(t, y, x)``: every pixel a sample -- :func:`~cropssl.data.ingest.cube.read_cube`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cropssl.data.ingest.common import IngestOptions, IngestReport, InputFormatError
from cropssl.schema import PixelSamples

__all__ = ["IngestOptions", "IngestReport", "InputFormatError", "detect_format", "read_input"]

PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
CUBE_SUFFIXES = (".nc", ".nc4", ".netcdf")


def detect_format(path: str | Path) -> str:
    """``"long"``, ``"wide"`` or ``"cube"`` from the file suffix and (for parquet) its column names."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in CUBE_SUFFIXES:
        return "cube"
    if suffix not in PARQUET_SUFFIXES:
        raise InputFormatError(
            f"{path}: unsupported file type {suffix!r}; expected parquet ({', '.join(PARQUET_SUFFIXES)}) "
            f"or NetCDF ({', '.join(CUBE_SUFFIXES)})"
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cropssl.data.ingest.wide import is_wide

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFormatError(f"{path}: not a readable parquet file ({exc}); is it truncated?") from exc
    if is_wide(names):
        return "wide"
    if "timestamp" in names:
        return "long"
    raise InputFormatError(
        f"{path}: neither long (a 'timestamp' column, one row per sample and month) nor wide "
        f"('{{SENSOR}}-{{BAND}}-ts{{t}}-{{res}}m' columns) WorldCereal format; columns: {names[:20]}"
    )


def read_input(
    path: str | Path, timesteps: int | None = None, options: IngestOptions | None = None
) -> tuple[PixelSamples, IngestReport]:
    """Read one input file into sample windows.

    Args:
        path: A long or wide parquet file or a NetCDF cube.
        timesteps: Months per sample window (default: ``options.timesteps``, 12).
        options: How to read it (cadence, window, labels, units; see :class:`IngestOptions`).

    Returns:
        The samples (physical units, missing mask) and an :class:`IngestReport`.

    Raises:
        FileNotFoundError: The file does not exist.
        InputFormatError: The file is of no supported format or its content is invalid; the message
            names the file and says what to do.

    """
    options = options or IngestOptions()
    if timesteps is not None:
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        options = dataclasses.replace(options, timesteps=timesteps)
    fmt = detect_format(path)
    if fmt == "cube":
        from cropssl.data.ingest.cube import read_cube

        return read_cube(path, options)
    if fmt == "wide":
        from cropssl.data.ingest.wide import read_wide

        return read_wide(path, options)
    from cropssl.data.ingest.long import read_long

    return read_long(path, options)
