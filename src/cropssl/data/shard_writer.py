"""Writing shard directories: records and shards filled as samples stream in, the manifest at the end.

:class:`ShardWriter` takes samples in any number of chunks (memory holds one record at a time plus the
running per-band statistics), so a corpus far larger than memory can be written; :func:`write_shards`
writes one in-memory :class:`~cropssl.schema.PixelSamples`. Both write atomically (a hidden temporary
directory renamed into place, :mod:`cropssl.io.atomic`) and deterministically: the same samples in the
same order give the same bytes.

Shard sizing (:func:`shard_layout`): a stream reads whole shards, and every reader (rank x dataloader
worker) needs several of them to mix sources and to finish epochs together, so a directory gets at least
``8 x readers`` shards when it has enough samples (records shrink before shards get fewer), and at most
``records_per_shard`` records of ``samples_per_record`` pixels per shard.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropssl import __version__
from cropssl.artifacts import sha256_file
from cropssl.data.shards import MANIFEST, SHARD_PATTERN, add_member, encode_record
from cropssl.io.atomic import atomic_dir
from cropssl.schema import BANDS, META_KEYS, NUM_BANDS, SCHEMA_VERSION, UNITS, PixelSamples

#: Shards per reader (rank x dataloader worker) a directory should have at least.
SHARDS_PER_READER = 8


def shard_layout(
    n_samples: int, samples_per_record: int = 256, records_per_shard: int = 16, readers: int = 4
) -> tuple[int, int]:
    """``(samples_per_record, records_per_shard)`` that give at least ``8 x readers`` shards when possible.

    Args:
        n_samples: Samples to write.
        samples_per_record: Largest record.
        records_per_shard: Largest shard, in records.
        readers: Ranks x dataloader workers that will read the directory (``--readers``).

    """
    if samples_per_record < 1 or records_per_shard < 1 or readers < 1:
        raise ValueError("samples_per_record, records_per_shard and readers must be >= 1")
    target = SHARDS_PER_READER * readers
    per_shard = max(1, math.ceil(n_samples / target))
    if per_shard <= samples_per_record:
        return max(1, per_shard), 1
    return samples_per_record, max(1, min(records_per_shard, per_shard // samples_per_record))


class BandStats:
    """Running per-band count, mean, std, min, max over present values (physical units)."""

    def __init__(self) -> None:
        self.count = np.zeros(NUM_BANDS)
        self.total = np.zeros(NUM_BANDS)
        self.squares = np.zeros(NUM_BANDS)
        self.lo = np.full(NUM_BANDS, np.inf)
        self.hi = np.full(NUM_BANDS, -np.inf)
        self.values = 0

    def add(self, samples: PixelSamples) -> None:
        """Accumulate the present values of ``samples``."""
        x = samples.x.reshape(-1, NUM_BANDS).astype(np.float64)
        present = ~samples.mask.reshape(-1, NUM_BANDS)
        v = np.where(present, x, 0.0)
        self.count += present.sum(0)
        self.total += v.sum(0)
        self.squares += (v * v).sum(0)
        self.lo = np.minimum(self.lo, np.where(present, x, np.inf).min(0, initial=np.inf))
        self.hi = np.maximum(self.hi, np.where(present, x, -np.inf).max(0, initial=-np.inf))
        self.values += x.shape[0]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """The manifest's ``band_stats``."""
        out = {}
        for i, band in enumerate(BANDS):
            n = self.count[i]
            mean = self.total[i] / n if n else float("nan")
            var = max(self.squares[i] / n - mean * mean, 0.0) if n else float("nan")
            out[band] = {
                "count": int(n),
                "missing_fraction": float(1 - n / self.values) if self.values else 0.0,
                "mean": float(mean),
                "std": float(math.sqrt(var)) if n else float("nan"),
                "min": float(self.lo[i]) if n else float("nan"),
                "max": float(self.hi[i]) if n else float("nan"),
            }
        return out


def band_statistics(samples: PixelSamples) -> dict[str, dict[str, float]]:
    """Per-band count, missing fraction, mean, std, min and max over present values (physical units)."""
    stats = BandStats()
    stats.add(samples)
    return stats.to_dict()


class ShardWriter:
    """Fill records and shards in ``directory`` from samples added in chunks, in order.

    Args:
        directory: An empty directory (the temporary of an :func:`~cropssl.io.atomic.atomic_dir`).
        samples_per_record: Pixels per webdataset record.
        records_per_shard: Records per ``.tar`` shard.

    """

    def __init__(self, directory: Path, samples_per_record: int, records_per_shard: int) -> None:
        if samples_per_record < 1 or records_per_shard < 1:
            raise ValueError("samples_per_record and records_per_shard must be >= 1")
        self.dir = Path(directory)
        self.spr, self.rps = samples_per_record, records_per_shard
        self.entries: list[dict[str, Any]] = []
        self.stats = BandStats()
        self.labels: dict[int, int] = {}
        self.meta_keys: set[str] = set(META_KEYS)
        self.timesteps: int | None = None
        self.has_dw: bool | None = None
        self.n = 0
        self._pending: list[PixelSamples] = []
        self._pending_n = 0
        self._tar: tarfile.TarFile | None = None
        self._records_in_shard = 0
        self._samples_in_shard = 0

    def add(self, samples: PixelSamples) -> None:
        """Append samples (same T and Dynamic World presence as the earlier ones)."""
        if self.timesteps is None:
            self.timesteps, self.has_dw = samples.timesteps, samples.dynamic_world is not None
        elif samples.timesteps != self.timesteps or (samples.dynamic_world is not None) != self.has_dw:
            raise ValueError(f"cannot write samples with T={samples.timesteps} after T={self.timesteps}")
        if len(samples) == 0:
            return
        self.stats.add(samples)
        labels, counts = np.unique(samples.label[samples.label >= 0], return_counts=True)
        for k, c in zip(labels.tolist(), counts.tolist(), strict=True):
            self.labels[k] = self.labels.get(k, 0) + c
        self.meta_keys |= set(samples.meta)
        self.n += len(samples)
        start = 0
        if self._pending_n:  # complete the pending record first
            start = min(self.spr - self._pending_n, len(samples))
            self._pending.append(samples.select(slice(0, start)))
            self._pending_n += start
            if self._pending_n == self.spr:
                self._flush()
        while len(samples) - start >= self.spr:  # whole records straight from the chunk (views, no copy)
            self._write(samples.select(slice(start, start + self.spr)))
            start += self.spr
        if start < len(samples):
            self._pending.append(samples.select(slice(start, None)))
            self._pending_n += len(samples) - start

    def _flush(self) -> None:
        rec = PixelSamples.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_n = [], 0
        self._write(rec)

    def _write(self, rec: PixelSamples) -> None:
        if self._tar is None:
            name = SHARD_PATTERN.format(len(self.entries))
            self._tar = tarfile.open(self.dir / name, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed in _close_shard)
        key = f"{len(self.entries):06d}_{self._records_in_shard:06d}"
        for fname, data in encode_record(rec).items():
            add_member(self._tar, f"{key}.{fname}", data)
        self._records_in_shard += 1
        self._samples_in_shard += len(rec)
        if self._records_in_shard == self.rps:
            self._close_shard()

    def _close_shard(self) -> None:
        assert self._tar is not None
        path = Path(self._tar.name)  # type: ignore[arg-type]
        self._tar.close()
        path.chmod(0o644)
        self.entries.append(
            {
                "name": path.name,
                "num_samples": self._samples_in_shard,
                "num_records": self._records_in_shard,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
        self._tar, self._records_in_shard, self._samples_in_shard = None, 0, 0

    def finish(self, sources: Sequence[str] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the last record / shard and ``manifest.json``; return the manifest."""
        if self._pending_n:
            self._flush()
        if self._tar is not None:
            self._close_shard()
        manifest: dict[str, Any] = {
            "format": "cropssl-shards",
            "schema_version": SCHEMA_VERSION,
            "cropssl_version": __version__,
            "bands": list(BANDS),
            "units": UNITS,
            "timesteps": self.timesteps or 0,
            "num_samples": self.n,
            "num_labelled": int(sum(self.labels.values())),
            "samples_per_record": self.spr,
            "meta_keys": sorted(self.meta_keys),
            "has_dynamic_world": bool(self.has_dw),
            "shards": self.entries,
            "band_stats": self.stats.to_dict(),
            "label_counts": {str(k): v for k, v in sorted(self.labels.items())},
            "sources": list(sources),
        }
        if extra:
            manifest.update(extra)
        (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (self.dir / MANIFEST).chmod(0o644)
        self.dir.chmod(0o755)
        return manifest


def write_shards(
    samples: PixelSamples,
    out_dir: str | os.PathLike[str],
    *,
    samples_per_record: int = 256,
    records_per_shard: int = 64,
    sources: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write samples to webdataset shards plus ``manifest.json``, atomically and deterministically.

    Args:
        samples: The samples to write, in the order they will be stored.
        out_dir: Target directory; must not exist unless ``overwrite``.
        samples_per_record: Pixels packed into one webdataset record.
        records_per_shard: Records per ``.tar`` shard.
        sources: Names of the input files / generator the samples came from (for the manifest).
        extra: Extra JSON-serialisable fields stored in the manifest (e.g. ingest reports).
        overwrite: Replace an existing directory.

    Returns:
        The manifest dict that was written.

    """
    if samples_per_record < 1 or records_per_shard < 1:
        raise ValueError("samples_per_record and records_per_shard must be >= 1")
    needed = int(samples.x.nbytes * 1.2 + samples.mask.nbytes + 4096)
    with atomic_dir(out_dir, overwrite=overwrite, needed_bytes=needed) as tmp:
        writer = ShardWriter(tmp, samples_per_record, records_per_shard)
        writer.add(samples)
        return writer.finish(sources, extra)
