"""Streaming data module: shards -> shuffled, normalised :class:`~cropssl.schema.Batch` objects.

The stream is deterministic given ``seed`` (and the epoch), splits shards by node (rank) and by
dataloader worker, shuffles shard order and samples (with a vectorised shuffle buffer: records hold
hundreds of pixels, so shuffling arrays beats shuffling Python dicts), and optionally runs in
*resampled* mode: shards are drawn with replacement and every rank yields exactly
``steps_per_epoch`` batches, so distributed ranks never disagree on the epoch length.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cropssl.data.shards import ShardError, iter_shard, resolve_shards
from cropssl.schema import Batch, PixelSamples

log = logging.getLogger(__name__)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class PixelStream(IterableDataset):
    """An iterable of :class:`Batch` read from webdataset shards.

    Args:
        shards: Shard spec(s): directories with a manifest, globs, brace patterns, paths or URLs.
        batch_size: Pixels per batch.
        shuffle_buffer: Samples kept in the shuffle buffer (0 = no sample shuffling).
        shuffle_shards: Shuffle the shard order every epoch (same order on every rank).
        resampled: Draw shards with replacement forever; requires ``steps_per_epoch``.
        steps_per_epoch: Batches per epoch per rank in resampled mode.
        seed: Base seed; the stream is a function of (seed, epoch, rank, worker).
        drop_last: Drop the last incomplete batch of a (non-resampled) pass.
        skip_corrupt: Skip unreadable shards with a warning instead of failing.

    """

    def __init__(
        self,
        shards: str | Sequence[str],
        batch_size: int = 256,
        shuffle_buffer: int = 4096,
        shuffle_shards: bool = True,
        resampled: bool = False,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__()
        self.urls = resolve_shards(shards)
        if resampled and not steps_per_epoch:
            raise ValueError("resampled=true needs steps_per_epoch (batches per epoch per rank)")
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.resampled = resampled
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.drop_last = drop_last
        self.skip_corrupt = skip_corrupt
        self.epoch = 0
        self.skipped_shards: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (changes shard order and shuffling deterministically)."""
        self.epoch = epoch

    def _shard_stream(self, rank: int, world: int, worker: int, workers: int) -> Iterator[str]:
        if self.resampled:
            rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker}")
            while True:
                yield rng.choice(self.urls)
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        if len(urls) < world * workers:
            log.warning(
                "%d shard(s) for %d rank(s) x %d worker(s): some readers get no data; write more, smaller "
                "shards or use resampled=true",
                len(urls),
                world,
                workers,
            )
        yield from urls[rank::world][worker::workers]

    def _records(self, urls: Iterator[str]) -> Iterator[PixelSamples]:
        for url in urls:
            try:
                yield from iter_shard(url)
            except ShardError as exc:
                if not self.skip_corrupt:
                    raise
                self.skipped_shards.append(url)
                log.warning(
                    "skipping unreadable shard (%d skipped so far): %s", len(self.skipped_shards), exc
                )

    def _batches(self, records: Iterator[PixelSamples], rng: np.random.Generator) -> Iterator[PixelSamples]:
        pool: PixelSamples | None = None
        bs = self.batch_size
        for rec in records:
            pool = rec if pool is None else PixelSamples.concat([pool, rec])
            if len(pool) < self.shuffle_buffer + bs:
                continue
            if self.shuffle_buffer:
                pool = pool.select(rng.permutation(len(pool)))
            n_out = (len(pool) - self.shuffle_buffer) // bs
            for i in range(n_out):
                yield pool.select(slice(i * bs, (i + 1) * bs))
            pool = pool.select(slice(n_out * bs, None))
        if pool is None or len(pool) == 0:
            return
        if self.shuffle_buffer:
            pool = pool.select(rng.permutation(len(pool)))
        for start in range(0, len(pool), bs):
            chunk = pool.select(slice(start, start + bs))
            if len(chunk) == bs or not self.drop_last:
                yield chunk

    def __iter__(self) -> Iterator[Batch]:
        rank, world = _rank_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        batches = self._batches(self._records(self._shard_stream(rank, world, worker, workers)), rng)
        limit = None
        if self.resampled:
            assert self.steps_per_epoch is not None
            limit = self.steps_per_epoch // workers + (1 if worker < self.steps_per_epoch % workers else 0)
        for i, samples in enumerate(batches):
            if limit is not None and i >= limit:
                return
            yield Batch.from_samples(samples)


def _identity(x: Any) -> Any:
    return x


def make_loader(stream: PixelStream, num_workers: int = 0, persistent_workers: bool = False) -> DataLoader:
    """A DataLoader over a :class:`PixelStream` (batches are formed in the stream)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity,
        persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )


class PixelDataModule(pl.LightningDataModule):
    """Lightning data module over pixel-timeseries shards.

    Args:
        train: Shard spec for training.
        val: Optional shard spec for validation (read in order, no shuffling).
        batch_size: Pixels per batch.
        num_workers: DataLoader workers (shards are split between them).
        shuffle_buffer: Samples in the shuffle buffer.
        resampled: Draw shards with replacement; every rank yields ``steps_per_epoch`` batches.
        steps_per_epoch: Batches per epoch per rank in resampled mode.
        seed: Base seed of the stream.
        skip_corrupt: Skip unreadable shards with a counted warning.
        drop_last: Drop incomplete final batches.

    """

    def __init__(
        self,
        train: str | Sequence[str],
        val: str | Sequence[str] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        shuffle_buffer: int = 4096,
        resampled: bool = True,
        steps_per_epoch: int | None = 100,
        seed: int = 0,
        skip_corrupt: bool = False,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        self.train_spec = train
        self.val_spec = val
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.skip_corrupt = skip_corrupt
        self.drop_last = drop_last
        self.train_stream: PixelStream | None = None

    def setup(self, stage: str | None = None) -> None:
        """Resolve the shard lists (fails early, naming missing shards)."""
        if self.train_stream is None:
            self.train_stream = PixelStream(
                self.train_spec,
                batch_size=self.batch_size,
                shuffle_buffer=self.shuffle_buffer,
                resampled=self.resampled,
                steps_per_epoch=self.steps_per_epoch,
                seed=self.seed,
                drop_last=self.drop_last,
                skip_corrupt=self.skip_corrupt,
            )

    def train_dataloader(self) -> DataLoader:
        """Training loader; the epoch is taken from the trainer so shuffling changes per epoch."""
        self.setup()
        assert self.train_stream is not None
        if self.trainer is not None:
            self.train_stream.set_epoch(self.trainer.current_epoch)
        return make_loader(self.train_stream, self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader in shard order (empty if no validation shards)."""
        if self.val_spec is None:
            return []
        stream = PixelStream(
            self.val_spec, batch_size=self.batch_size, shuffle_buffer=0, shuffle_shards=False, seed=self.seed
        )
        return make_loader(stream, 0)
