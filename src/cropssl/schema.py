"""The one sample schema every stage of cropssl shares.

Bands follow the published Presto order, values are stored in physical units (see ``UNITS``) and
normalised with ``(x + NORM_ADD) / NORM_DIV``; NDVI is recomputed from the *normalised* B8 and B4,
exactly as Presto does. Missing values are tracked with a per-value boolean mask (True = missing).

Two containers travel between stages:

* :class:`PixelSamples` -- numpy arrays in physical units, produced by every ingest (parquet, NetCDF,
  synthetic generator) and written to / read from shards.
* :class:`Batch` -- torch tensors, normalised, produced by the data module and consumed by views,
  masks, encoders, methods and evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

BANDS: tuple[str, ...] = (
    "VV",
    "VH",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B8",
    "B8A",
    "B11",
    "B12",
    "temperature_2m",
    "total_precipitation",
    "elevation",
    "slope",
    "NDVI",
)
NUM_BANDS = len(BANDS)
BAND_INDEX: dict[str, int] = {b: i for i, b in enumerate(BANDS)}

UNITS: dict[str, str] = {
    "VV": "dB",
    "VH": "dB",
    **{b: "reflectance x 1e4" for b in ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")},
    "temperature_2m": "K",
    "total_precipitation": "m",
    "elevation": "m",
    "slope": "degrees",
    "NDVI": "unitless",
}

#: Channel groups in Presto's order. Each group becomes one token per timestep, except the static
#: ``SRTM`` group which becomes a single token.
BAND_GROUPS: dict[str, tuple[int, ...]] = {
    "S1": (0, 1),
    "S2_RGB": (2, 3, 4),
    "S2_Red_Edge": (5, 6, 7),
    "S2_NIR_10m": (8,),
    "S2_NIR_20m": (9,),
    "S2_SWIR": (10, 11),
    "ERA5": (12, 13),
    "SRTM": (14, 15),
    "NDVI": (16,),
}
GROUP_NAMES: tuple[str, ...] = tuple(BAND_GROUPS)
STATIC_GROUPS: tuple[str, ...] = ("SRTM",)
DYNAMIC_GROUPS: tuple[str, ...] = tuple(g for g in GROUP_NAMES if g not in STATIC_GROUPS)

#: Groups per sensor, used by sensor dropout and by the synthetic cloud model.
SENSOR_GROUPS: dict[str, tuple[str, ...]] = {
    "S1": ("S1",),
    "S2": ("S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR", "NDVI"),
    "ERA5": ("ERA5",),
    "SRTM": ("SRTM",),
}
S2_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")

#: The one alias table of input names: schema band -> the names it has in the files users bring.
#: WorldCereal extractions (long parquet / cubes: ``S2-L2A-B02``; wide parquet ``{SENSOR}-{BAND}``
#: prefixes: ``OPTICAL-B02``), openEO / GFMAP collections (``B02``, ``VV``, AgERA5 ``temperature-mean``),
#: Presto (``B2``, ``temperature_2m``) and DEM layers (``DEM``, ``altitude``). Matching is
#: case-insensitive. The *names* say which band a variable is; its *encoding* (WorldCereal digital numbers
#: by default, or the units a file declares) is decided by the reader (``cropssl.data.ingest.units``).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "VV": ("S1-SIGMA0-VV", "SAR-VV", "S1-VV", "VV", "sigma0_vv"),
    "VH": ("S1-SIGMA0-VH", "SAR-VH", "S1-VH", "VH", "sigma0_vh"),
    **{
        f"B{b.lstrip('0')}": (
            f"S2-L2A-B{b}",
            f"S2-L1C-B{b}",
            f"OPTICAL-B{b}",
            f"B{b}",
            *((f"B{b.lstrip('0')}",) if b.startswith("0") else ()),
        )
        for b in ("02", "03", "04", "05", "06", "07", "08", "8A", "11", "12")
    },
    "temperature_2m": (
        "AGERA5-TMEAN",
        "METEO-temperature_mean",
        "temperature-mean",
        "temperature_mean",
        "temperature_2m",
    ),
    "total_precipitation": (
        "AGERA5-PRECIP",
        "METEO-precipitation_flux",
        "precipitation-flux",
        "precipitation_flux",
        "total_precipitation",
    ),
    "elevation": ("elevation", "DEM-alt", "DEM", "altitude", "alt", "COP-DEM"),
    "slope": ("slope", "DEM-slo", "slo"),
}
_ALIAS_LOOKUP: dict[str, str] = {a.lower(): band for band, names in BAND_ALIASES.items() for a in names}


def band_for_name(name: str) -> str | None:
    """The schema band a file's variable / column name stands for (any alias, any case), else ``None``."""
    return _ALIAS_LOOKUP.get(str(name).strip().lower())


NORM_ADD = np.array([25, 25] + [0] * 10 + [-272.15, 0, 0, 0, 0], dtype=np.float64)
NORM_DIV = np.array([25, 25] + [1e4] * 10 + [35, 0.03, 2000, 50, 1], dtype=np.float64)

#: Dynamic World has 9 classes; index 9 means "missing".
DW_MISSING = 9
DW_CLASSES = 10

#: Label value meaning "no label".
NO_LABEL = -1

#: Grouping keys every sample carries for splits (strings; "" when unknown) plus the integer year.
META_KEYS: tuple[str, ...] = ("sample_id", "source", "ref_id", "country", "h3_l3_cell")


def ndvi(b8: np.ndarray, b4: np.ndarray) -> np.ndarray:
    """NDVI from (normalised) B8 and B4, 0 where the denominator is 0 (Presto's convention)."""
    num = b8 - b4
    den = b8 + b4
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1), 0).astype(b8.dtype)


def normalize(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise physical values ``[..., 17]`` with Presto's constants.

    NDVI is recomputed from the normalised B8 and B4. If ``mask`` is given, missing values are set to
    0 in the output (they carry no information and must not leak into any computation).

    Args:
        x: Values in physical units, last axis = the 17 bands of :data:`BANDS`.
        mask: Optional boolean mask of the same shape, True where missing.

    Returns:
        Normalised float32 array of the same shape.

    """
    x = np.asarray(x)
    if x.shape[-1] != NUM_BANDS:
        raise ValueError(f"expected {NUM_BANDS} bands {BANDS} on the last axis, got shape {x.shape}")
    y = ((x.astype(np.float64) + NORM_ADD) / NORM_DIV).astype(np.float32)
    y[..., BAND_INDEX["NDVI"]] = ndvi(y[..., BAND_INDEX["B8"]], y[..., BAND_INDEX["B4"]])
    if mask is not None:
        y = np.where(mask, np.float32(0), y)
    return y


def ndvi_mask(mask: np.ndarray) -> np.ndarray:
    """Missing mask of NDVI: missing wherever B8 or B4 is missing."""
    return mask[..., BAND_INDEX["B8"]] | mask[..., BAND_INDEX["B4"]]


@dataclasses.dataclass
class PixelSamples:
    """A set of pixel time series in physical units (numpy), the unit of ingest and shard I/O.

    Attributes:
        x: ``[N, T, 17]`` float32 values in physical units (0 where missing).
        mask: ``[N, T, 17]`` bool, True = missing.
        month: ``[N, T]`` int8, calendar month of each timestep, 0 = January.
        latlon: ``[N, 2]`` float32, latitude and longitude in degrees.
        label: ``[N]`` int64 WorldCereal ``ewoc_code`` or :data:`NO_LABEL`.
        year: ``[N]`` int16, year of the label / of the window's end (0 if unknown).
        meta: string arrays of length N for each of :data:`META_KEYS`.
        dynamic_world: optional ``[N, T]`` int8 Dynamic World class (9 = missing).

    """

    x: np.ndarray
    mask: np.ndarray
    month: np.ndarray
    latlon: np.ndarray
    label: np.ndarray
    year: np.ndarray
    meta: dict[str, np.ndarray]
    dynamic_world: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.ndim != 3 or self.x.shape[-1] != NUM_BANDS:
            raise ValueError(f"x must be [N, T, {NUM_BANDS}] (bands {BANDS}), got {self.x.shape}")
        if self.mask.shape != self.x.shape:
            raise ValueError(f"mask shape {self.mask.shape} != x shape {self.x.shape}")
        if self.month.shape != self.x.shape[:2]:
            raise ValueError(f"month must be [N, T] = {self.x.shape[:2]}, got {self.month.shape}")
        if self.latlon.shape != (n, 2):
            raise ValueError(f"latlon must be [{n}, 2], got {self.latlon.shape}")
        if self.label.shape != (n,) or self.year.shape != (n,):
            raise ValueError("label and year must be [N]")
        for k in META_KEYS:
            if k not in self.meta:
                self.meta[k] = np.full(n, "", dtype=object)
            if len(self.meta[k]) != n:
                raise ValueError(f"meta[{k!r}] has {len(self.meta[k])} entries, expected {n}")
        if self.dynamic_world is not None and self.dynamic_world.shape != self.x.shape[:2]:
            raise ValueError("dynamic_world must be [N, T]")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def timesteps(self) -> int:
        """Number of timesteps T."""
        return self.x.shape[1]

    def observed_steps(self) -> np.ndarray:
        """``[N]`` number of timesteps with at least one Sentinel-1 or Sentinel-2 value present.

        Meteo and DEM are known everywhere, so they say nothing about the pixel itself: a sample with no
        observed S1/S2 step has no data to classify.
        """
        sensors = [BAND_INDEX[b] for b in ("VV", "VH", *S2_BANDS)]
        return (~self.mask[:, :, sensors]).any(axis=2).sum(axis=1)

    def select(self, idx: np.ndarray | slice) -> PixelSamples:
        """Subset of samples by index array, boolean array or slice."""
        return PixelSamples(
            x=self.x[idx],
            mask=self.mask[idx],
            month=self.month[idx],
            latlon=self.latlon[idx],
            label=self.label[idx],
            year=self.year[idx],
            meta={k: np.asarray(v)[idx] for k, v in self.meta.items()},
            dynamic_world=None if self.dynamic_world is None else self.dynamic_world[idx],
        )

    @staticmethod
    def concat(parts: Sequence[PixelSamples]) -> PixelSamples:
        """Concatenate sample sets with the same T."""
        if not parts:
            raise ValueError("nothing to concatenate")
        ts = {p.timesteps for p in parts}
        if len(ts) != 1:
            raise ValueError(f"cannot concatenate sample sets with different T: {sorted(ts)}")
        dw = None
        if all(p.dynamic_world is not None for p in parts):
            dw = np.concatenate([p.dynamic_world for p in parts])  # type: ignore[misc]
        keys = set().union(*(p.meta for p in parts))
        return PixelSamples(
            x=np.concatenate([p.x for p in parts]),
            mask=np.concatenate([p.mask for p in parts]),
            month=np.concatenate([p.month for p in parts]),
            latlon=np.concatenate([p.latlon for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            year=np.concatenate([p.year for p in parts]),
            meta={
                k: np.concatenate(
                    [np.asarray(p.meta.get(k, np.full(len(p), "", object)), object) for p in parts]
                )
                for k in sorted(keys)
            },
            dynamic_world=dw,
        )


#: The tensor fields of :class:`Batch`, in order.
TENSOR_FIELDS = ("x", "mask", "month", "latlon", "dynamic_world", "label")


def _batch_from_arrays(arrays: Sequence[np.ndarray], meta: Mapping[str, Any]) -> Batch:
    """A :class:`Batch` of CPU tensors over unpickled arrays (see :meth:`Batch.__reduce__`)."""
    import torch

    return Batch(*(torch.from_numpy(a) for a in arrays), meta=meta)


@dataclasses.dataclass
class Batch:
    """A batch of normalised pixel time series (torch), the contract between all training stages.

    Attributes:
        x: ``[B, T, 17]`` float, normalised (0 where missing).
        mask: ``[B, T, 17]`` bool, True = missing.
        month: ``[B, T]`` long, 0-11.
        latlon: ``[B, 2]`` float, degrees.
        dynamic_world: ``[B, T]`` long, 9 = missing.
        label: ``[B]`` long ``ewoc_code`` or -1.
        meta: per-sample metadata (lists of str / ints); not moved to devices.

    """

    x: Any
    mask: Any
    month: Any
    latlon: Any
    dynamic_world: Any
    label: Any
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def replace(self, **changes: Any) -> Batch:
        """A copy with some fields replaced (views and masks use this; never mutate in place)."""
        return dataclasses.replace(self, **changes)

    def select(self, idx: Any) -> Batch:
        """Rows ``idx`` (index tensor / array, boolean mask or slice) of the tensor fields, without meta."""
        if not isinstance(idx, slice) and not hasattr(idx, "device"):
            import torch

            idx = torch.as_tensor(idx)
        return Batch(**{f: getattr(self, f)[idx] for f in TENSOR_FIELDS})

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Batches with the same T stacked along the batch dimension (meta kept only for a single batch)."""
        import torch

        if not batches:
            raise ValueError("nothing to concatenate")
        return Batch(
            **{f: torch.cat([getattr(b, f) for b in batches]) for f in TENSOR_FIELDS},
            meta={} if len(batches) > 1 else batches[0].meta,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle CPU tensors by value, as numpy arrays (other tensors the default way).

        A DataLoader worker sends every batch through a pipe. By default torch first moves each tensor to a
        shared-memory segment of its own, and for these small batches that cost more than making them:
        shard -> batch ran at 37k px/s with one worker (two: 51k) against 167k in-process; by value, 116k
        (two: 128k; ``experiments/benchmarks/bench_data.py --stream``).
        """
        fields = tuple(getattr(self, f) for f in TENSOR_FIELDS)
        try:  # CPU tensors without gradients; CUDA / bfloat16 / grad tensors and arrays keep the default
            arrays = tuple(t.numpy() for t in fields)
        except (AttributeError, RuntimeError, TypeError):
            return (Batch, (*fields, self.meta))
        return (_batch_from_arrays, (arrays, self.meta))

    def to(self, device: Any, non_blocking: bool = False) -> Batch:
        """Move the tensor fields to ``device`` (Lightning's default batch transfer calls this)."""
        return self.replace(
            **{f: getattr(self, f).to(device, non_blocking=non_blocking) for f in TENSOR_FIELDS}
        )

    @staticmethod
    def from_samples(samples: PixelSamples) -> Batch:
        """Normalise a :class:`PixelSamples` into a torch :class:`Batch`."""
        import torch

        x = normalize(samples.x, samples.mask)
        dw = samples.dynamic_world
        if dw is None:
            dw = np.full(samples.month.shape, DW_MISSING, dtype=np.int64)
        meta: dict[str, Any] = {k: list(map(str, v)) for k, v in samples.meta.items()}
        meta["year"] = samples.year.astype(np.int64).tolist()
        return Batch(
            x=torch.from_numpy(np.ascontiguousarray(x)),
            mask=torch.from_numpy(np.ascontiguousarray(samples.mask, dtype=bool)),
            month=torch.from_numpy(samples.month.astype(np.int64)),
            latlon=torch.from_numpy(samples.latlon.astype(np.float32)),
            dynamic_world=torch.from_numpy(np.asarray(dw, dtype=np.int64)),
            label=torch.from_numpy(samples.label.astype(np.int64)),
            meta=meta,
        )
