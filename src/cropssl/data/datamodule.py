"""Streaming data module: shards -> shuffled, normalised :class:`~cropssl.schema.Batch` objects.

The stream is deterministic given ``seed`` (and the epoch), splits shards by node (rank) and by
dataloader worker, shuffles shard order and samples (with a vectorised shuffle buffer: records hold
hundreds of pixels, so shuffling arrays beats shuffling Python dicts), and optionally runs in
*resampled* mode: shards are drawn with replacement and every rank yields exactly
``steps_per_epoch`` batches, so distributed ranks never disagree on the epoch length.

Distributed training (DDP): shards are split by global rank and by dataloader worker, and every stream
is seeded by ``(seed, epoch, rank, worker)``, so ranks and workers read different data. In resampled mode
(the default, and the recommended mode for DDP) every rank yields exactly ``steps_per_epoch`` batches.
Without resampling, every rank is cut to the number of batches of the smallest rank, computed from the
shards' sample counts in ``manifest.json`` (so no rank waits at the end of an epoch for the others), and
a clear error is raised when there are fewer shards than ranks x workers or the sample counts are unknown.

Shards may be local or remote (``https://``, ``s3://``, ``gs://``, ``pipe:``; see
:mod:`cropssl.data.remote`), with bounded retries and an optional local ``cache_dir``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cropssl.data.mix import parse_mix
from cropssl.data.remote import is_remote
from cropssl.data.shards import (
    ShardError,
    check_compatible,
    iter_shard,
    preflight,
    shard_entries,
)
from cropssl.losses.dist import rank as dist_rank
from cropssl.losses.dist import world_size
from cropssl.schema import Batch, PixelSamples

log = logging.getLogger(__name__)


def round_robin(total: int, caps: Sequence[float]) -> list[int]:
    """How many of ``total`` batches each reader serves when they are dealt round-robin.

    Reader ``i`` serves at most ``caps[i]``; this is the order in which a DataLoader collects batches from
    its workers (an exhausted worker is passed over).

    Raises:
        ValueError: the caps add up to less than ``total``.

    """
    if sum(caps) < total:
        raise ValueError(f"cannot deal {total} batches to readers holding {list(caps)}")
    n = len(caps)
    out = [0] * n
    left = total
    while left > 0:
        open_ = [i for i in range(n) if out[i] < caps[i]]
        # whole rounds at once: every open reader takes one per round until the smallest one is full
        rounds = min(left // len(open_), min(caps[i] - out[i] for i in open_))
        if rounds >= 1:
            rounds = int(rounds)
            for i in open_:
                out[i] += rounds
            left -= rounds * len(open_)
            continue
        for i in open_[:left]:
            out[i] += 1
        left = 0
    return out


class PixelStream(IterableDataset):
    """An iterable of :class:`Batch` read from webdataset shards.

    Args:
        shards: Shard spec(s): directories with a manifest, globs, brace patterns, paths or URLs; or a
            weighted mix ``[{"shards": spec, "weight": w}, ...]`` (see :func:`cropssl.data.mix.parse_mix`).
        batch_size: Pixels per batch.
        shuffle_buffer: Samples kept in the shuffle buffer (0 = no sample shuffling).
        shuffle_shards: Shuffle the shard order every epoch (same order on every rank).
        resampled: Draw shards with replacement forever; requires ``steps_per_epoch``.
        steps_per_epoch: Batches per epoch per rank in resampled mode.
        seed: Base seed; the stream is a function of (seed, epoch, rank, worker).
        drop_last: Drop the last incomplete batch of a (non-resampled) pass.
        skip_corrupt: Skip unreadable shards with a warning instead of failing.
        cache_dir: Keep local copies of remote shards here (read from there next time).
        retries: Retries of a failed remote shard read (bounded, exponential back-off).
        interleave: Shards read at once per reader, their records taken in turn (mixes sources and places
            even in shard directories written without the write-time shuffle).

    """

    def __init__(
        self,
        shards: str | Sequence[str] | Sequence[Mapping[str, Any]],
        batch_size: int = 256,
        shuffle_buffer: int = 4096,
        shuffle_shards: bool = True,
        resampled: bool = False,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
        retries: int = 3,
        interleave: int = 4,
    ) -> None:
        super().__init__()
        if interleave < 1:
            raise ValueError(f"interleave must be >= 1, got {interleave}")
        self.interleave = int(interleave)
        self.sources, self.weights = parse_mix(shards)
        check_compatible(self.sources)
        #: Shards found missing or truncated before reading (skipped with ``skip_corrupt``): ``(url, why)``.
        self.preflight_skipped: list[tuple[str, str]] = []
        bad = preflight([u for src in self.sources for u in src])
        if bad:
            listing = "; ".join(f"{u}: {why}" for u, why in bad[:10]) + (" ..." if len(bad) > 10 else "")
            if not skip_corrupt:
                raise ShardError(
                    f"{len(bad)} shard(s) are missing or truncated (checked against manifest.json before "
                    f"training): {listing}. Re-create them, or set data.skip_corrupt=true to train without "
                    "them"
                )
            dropped = {u for u, _ in bad}
            self.preflight_skipped = bad
            kept = [[u for u in src if u not in dropped] for src in self.sources]
            if not any(kept):
                raise ShardError(f"every shard is missing or truncated: {listing}")
            pairs = [(src, w) for src, w in zip(kept, self.weights) if src]
            self.sources, self.weights = [s for s, _ in pairs], [w for _, w in pairs]
            log.warning("skipping %d missing / truncated shard(s): %s", len(bad), listing)
        self.urls = [u for src in self.sources for u in src]
        if len(self.sources) > 1 and not resampled:
            raise ValueError(
                "a weighted mix of several shard sources needs resampled=true (and steps_per_epoch)"
            )
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
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.retries = int(retries)
        self.epoch = 0
        #: ``(global rank, world size)`` set by the data module from the trainer; ``None``: ask
        #: torch.distributed when iterating.
        self.rank_world: tuple[int, int] | None = None
        self._entries: dict[str, dict[str, Any]] | None = None
        #: ``(epoch, batches already served)`` of an interrupted epoch: on a mid-epoch resume the stream
        #: skips those batches of that epoch (only), so the data continues exactly.
        self.resume_position: tuple[int, int] = (-1, 0)
        self.skipped_shards: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (changes shard order and shuffling deterministically)."""
        self.epoch = epoch

    def set_rank(self, rank: int, world: int) -> None:
        """Set this process's global rank and the world size (the data module does, from the trainer)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of size {world}")
        self.rank_world = (int(rank), int(world))

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        """Manifest entries (``num_samples``, ``bytes``) of the shards, where a manifest exists."""
        if self._entries is None:
            self._entries = shard_entries(self.urls)
        return self._entries

    def _epoch_urls(self) -> list[str]:
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        return urls

    def _n_batches(self, n_samples: int) -> int:
        full, rest = divmod(n_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def equal_rank_limits(self, rank: int, world: int, workers: int) -> list[int]:
        """Batches each worker of ``rank`` serves this epoch so that every rank serves the same number.

        Used without resampling under DDP: a rank whose shards hold more samples stops early, at the batch
        count of the smallest rank (computed from the manifest's sample counts).

        Raises:
            ValueError: fewer shards than ranks x workers, shards without a known sample count, or a rank
                with fewer samples than one batch.

        """
        urls = self._epoch_urls()
        if len(urls) < world * workers:
            raise ValueError(
                f"{len(urls)} shard(s) cannot feed {world} rank(s) x {workers} dataloader worker(s) without "
                "resampling (some would get no data and the ranks would disagree on the epoch length): "
                "write more, smaller shards (cropssl-shard --records-per-shard), use fewer workers, or set "
                "data.resampled=true with data.steps_per_epoch"
            )
        entries = self.entries
        unknown = [u for u in urls if "num_samples" not in entries.get(u, {})]
        if unknown:
            raise ValueError(
                "distributed training without resampling needs the sample count of every shard (from "
                "manifest.json beside the shards) to give every rank the same number of batches; unknown "
                f"for {unknown[:3]}{' ...' if len(unknown) > 3 else ''}. Keep the manifest with the shards "
                "or set data.resampled=true with data.steps_per_epoch"
            )
        caps = [
            [
                self._n_batches(sum(int(entries[u]["num_samples"]) for u in urls[r::world][w::workers]))
                for w in range(workers)
            ]
            for r in range(world)
        ]
        per_rank = [sum(c) for c in caps]
        total = min(per_rank)
        if total == 0:
            raise ValueError(
                f"rank {per_rank.index(0)} of {world} gets no complete batch from its shards: use fewer "
                "ranks or workers, a smaller batch size, or data.resampled=true"
            )
        if rank == 0 and max(per_rank) > total:
            log.info(
                "epoch %d: every rank serves %d batches (ranks hold %s); the extra batches are skipped",
                self.epoch,
                total,
                per_rank,
            )
        return round_robin(total, caps[rank])

    def _shard_stream(self, rank: int, world: int, worker: int, workers: int) -> Iterator[str]:
        if self.resampled:
            rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker}")
            while True:
                source = rng.choices(self.sources, weights=self.weights)[0]
                yield rng.choice(source)
        urls = self._epoch_urls()
        if len(urls) < world * workers:
            log.warning(
                "%d shard(s) for %d rank(s) x %d worker(s): some readers get no data; write more, smaller "
                "shards or use resampled=true",
                len(urls),
                world,
                workers,
            )
        yield from urls[rank::world][worker::workers]

    def _shard_records(self, url: str, entries: dict[str, dict[str, Any]]) -> Iterator[PixelSamples]:
        try:
            size = entries.get(url, {}).get("bytes")
            yield from iter_shard(url, cache_dir=self.cache_dir, retries=self.retries, expected_size=size)
        except ShardError as exc:
            if not self.skip_corrupt:
                raise
            self.skipped_shards.append(url)
            log.warning("skipping unreadable shard (%d skipped so far): %s", len(self.skipped_shards), exc)

    def _records(self, urls: Iterator[str]) -> Iterator[PixelSamples]:
        """Records of ``interleave`` shards at a time, taken in turn (a new shard opens when one ends)."""
        entries = self.entries if any(is_remote(u) for u in self.urls) else {}
        open_: list[Iterator[PixelSamples]] = []
        urls = iter(urls)
        while True:
            while len(open_) < self.interleave:
                url = next(urls, None)
                if url is None:
                    break
                open_.append(self._shard_records(url, entries))
            if not open_:
                return
            for it in list(open_):
                rec = next(it, None)
                if rec is None:
                    open_.remove(it)
                else:
                    yield rec

    def _batches(self, records: Iterator[PixelSamples], rng: np.random.Generator) -> Iterator[PixelSamples]:
        """Batches through a shuffle buffer refilled in blocks (each sample is copied about twice)."""
        bs, keep = self.batch_size, self.shuffle_buffer
        parts: list[PixelSamples] = []
        n = 0
        for rec in records:
            parts.append(rec)
            n += len(rec)
            if n < 2 * keep + bs:
                continue
            pool = PixelSamples.concat(parts) if len(parts) > 1 else parts[0]
            if keep:
                pool = pool.select(rng.permutation(len(pool)))
            n_out = (len(pool) - keep) // bs
            for i in range(n_out):
                yield pool.select(slice(i * bs, (i + 1) * bs))
            rest = pool.select(slice(n_out * bs, None))
            parts, n = [rest], len(rest)
        if n == 0:
            return
        pool = PixelSamples.concat(parts) if len(parts) > 1 else parts[0]
        if keep:
            pool = pool.select(rng.permutation(len(pool)))
        for start in range(0, len(pool), bs):
            chunk = pool.select(slice(start, start + bs))
            if len(chunk) == bs or not self.drop_last:
                yield chunk

    def __iter__(self) -> Iterator[Batch]:
        rank, world = self.rank_world if self.rank_world is not None else (dist_rank(), world_size())
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        limits: list[float] = [float("inf")] * workers
        if self.resampled:
            assert self.steps_per_epoch is not None
            limits = [float(n) for n in round_robin(self.steps_per_epoch, limits)]
        elif world > 1:
            limits = [float(n) for n in self.equal_rank_limits(rank, world, workers)]
        limit = None if limits[worker] == float("inf") else int(limits[worker])
        resume_epoch, served = self.resume_position
        total_skip = served if resume_epoch == self.epoch else 0
        skip = round_robin(int(min(sum(limits), total_skip)), limits)[worker]
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        batches = self._batches(self._records(self._shard_stream(rank, world, worker, workers)), rng)
        for i, samples in enumerate(batches):
            if limit is not None and i >= limit:
                return
            if i >= skip:
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
        train: Shard spec for training, or a weighted mix (see :func:`cropssl.data.mix.parse_mix`).
        val: Optional shard spec for validation (read in order, no shuffling).
        batch_size: Pixels per batch.
        num_workers: DataLoader workers (shards are split between them).
        shuffle_buffer: Samples in the shuffle buffer.
        resampled: Draw shards with replacement; every rank yields ``steps_per_epoch`` batches.
        steps_per_epoch: Batches per epoch per rank in resampled mode.
        seed: Base seed of the stream.
        skip_corrupt: Skip unreadable shards with a counted warning.
        drop_last: Drop incomplete final batches.
        cache_dir: Keep local copies of remote shards here (e.g. node-local disk).
        retries: Retries of a failed remote shard read.
        interleave: Shards each reader reads at once (records taken in turn).

    """

    def __init__(
        self,
        train: str | Sequence[str] | Sequence[Mapping[str, Any]],
        val: str | Sequence[str] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        shuffle_buffer: int = 4096,
        resampled: bool = True,
        steps_per_epoch: int | None = 100,
        seed: int = 0,
        skip_corrupt: bool = False,
        drop_last: bool = True,
        cache_dir: str | None = None,
        retries: int = 3,
        interleave: int = 4,
    ) -> None:
        super().__init__()
        self.interleave = interleave
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
        self.cache_dir = cache_dir
        self.retries = retries
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
                cache_dir=self.cache_dir,
                retries=self.retries,
                interleave=self.interleave,
            )

    def train_dataloader(self) -> DataLoader:
        """Training loader; the epoch is taken from the trainer so shuffling changes per epoch."""
        self.setup()
        assert self.train_stream is not None
        self._set_rank(self.train_stream)
        if self.trainer is not None:
            self.train_stream.set_epoch(self.trainer.current_epoch)
        return make_loader(self.train_stream, self.num_workers)

    def _set_rank(self, stream: PixelStream) -> None:
        """Tell the stream its rank (workers may not see torch.distributed) and load what it needs."""
        if self.trainer is not None:
            stream.set_rank(self.trainer.global_rank, self.trainer.world_size)
        world = stream.rank_world[1] if stream.rank_world is not None else 1
        if (world > 1 and not stream.resampled) or any(is_remote(u) for u in stream.urls):
            _ = stream.entries  # read the manifests once here, not in every worker

    def state_dict(self) -> dict[str, Any]:
        """Data position saved in every checkpoint: the epoch and the batches it already served."""
        if self.trainer is None:
            return {}
        loop = self.trainer.fit_loop
        # "processed" (not "completed"): a checkpoint written from on_train_batch_end has processed the
        # current batch although Lightning counts it completed only afterwards
        served = loop.epoch_loop.batch_progress.current.processed
        return {"epoch": int(self.trainer.current_epoch), "batches_in_epoch": int(served)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume, continue the stream where the interrupted epoch stopped."""
        if not state_dict:
            return
        self.setup()
        assert self.train_stream is not None
        self.train_stream.set_epoch(int(state_dict["epoch"]))
        self.train_stream.resume_position = (int(state_dict["epoch"]), int(state_dict["batches_in_epoch"]))

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader in shard order (empty without ``val`` shards; the app then skips the loop)."""
        if self.val_spec is None:
            return []
        stream = PixelStream(
            self.val_spec,
            batch_size=self.batch_size,
            shuffle_buffer=0,
            shuffle_shards=False,
            seed=self.seed,
            cache_dir=self.cache_dir,
            retries=self.retries,
            interleave=1,
        )
        self._set_rank(stream)
        return make_loader(stream, 0)
