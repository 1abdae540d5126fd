"""Views of pixel time series: augmentations that act on values and on the missing mask of a Batch.

Every transform takes a :class:`~cropssl.schema.Batch` (and an optional ``torch.Generator``) and returns
a new one; nothing is mutated in place. Transforms are vectorised over the batch (no per-sample Python
loops) and obey one rule: **they never invent data where the mask says missing**. After any transform

* ``x == 0`` wherever ``mask`` is True, and
* a value that was missing stays missing (the mask only grows),

except :class:`RandomTemporalWindow`, which re-indexes time: each kept timestep carries its values, its
mask, its month and its Dynamic World class with it, and the padding it adds is missing.

:class:`LatLonJitter` moves only the location (lat/lon), so that two views of a pixel cannot be matched
by a location they share exactly.

Each transform has a per-sample probability ``p`` of being applied. Random draws use the ``generator``
when one is given (on the generator's device, then moved to the batch's device), so a seeded CPU
generator makes views reproducible on any device.

Dynamic World is derived from Sentinel-2, so transforms that hide S2 (sensor dropout, synthetic clouds)
or whole timesteps also hide the Dynamic World class there (``dynamic_world = 9``) unless told not to;
otherwise the encoder could read the hidden optical signal back from it.

Views for a method are made by a :class:`ViewGenerator` (``n_global`` global views, plus ``n_local``
local views for DINO that see less of the pixel), configured under ``configs/augment/``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from cropssl.schema import (
    BAND_GROUPS,
    DW_MISSING,
    GROUP_NAMES,
    NUM_BANDS,
    SENSOR_GROUPS,
    STATIC_GROUPS,
    Batch,
)

__all__ = [
    "ChannelGroupDropout",
    "Compose",
    "GaussianNoise",
    "MultiplicativeJitter",
    "RandomTemporalWindow",
    "SensorDropout",
    "SyntheticCloudMask",
    "TimestepDropout",
    "Transform",
    "ViewGenerator",
    "band_mask",
]


def band_mask(groups: Sequence[str], device: torch.device | str | None = None) -> Tensor:
    """Boolean ``[17]`` selector of the bands of some groups of :data:`~cropssl.schema.BAND_GROUPS`."""
    unknown = [g for g in groups if g not in BAND_GROUPS]
    if unknown:
        raise ValueError(f"unknown channel groups {unknown}; expected names from {list(GROUP_NAMES)}")
    sel = torch.zeros(NUM_BANDS, dtype=torch.bool, device=device)
    for g in groups:
        sel[list(BAND_GROUPS[g])] = True
    return sel


#: Bands that change over time (everything except the static SRTM bands).
_STATIC_BANDS = band_mask(STATIC_GROUPS)
#: Sentinel-2 bands including NDVI.
_S2_BANDS = band_mask(SENSOR_GROUPS["S2"])
_S1_BANDS = band_mask(SENSOR_GROUPS["S1"])


def _check_prob(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws on the generator's device (for reproducibility), returned on ``device``."""
    if generator is None:
        return torch.rand(tuple(shape), device=device)
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal draws, like :func:`_rand`."""
    if generator is None:
        return torch.randn(tuple(shape), device=device)
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


def _apply_mask(batch: Batch, hide: Tensor, hide_dw: Tensor | None = None) -> Batch:
    """Add ``hide`` ``[B, T, 17]`` to the mask, zero hidden values, optionally hide DW ``[B, T]``."""
    mask = batch.mask | hide
    changes = {"x": batch.x.masked_fill(mask, 0.0), "mask": mask}
    if hide_dw is not None and batch.dynamic_world is not None:
        changes["dynamic_world"] = batch.dynamic_world.masked_fill(hide_dw, DW_MISSING)
    return batch.replace(**changes)


class Transform:
    """Base class of all views: a callable ``(batch, generator=None) -> batch``.

    Args:
        p: Probability that the transform is applied to a sample (drawn independently per sample).

    """

    def __init__(self, p: float = 1.0) -> None:
        self.p = _check_prob("p", p)

    def _applied(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``[n]`` bool: which samples the transform acts on this call."""
        return _rand((n,), generator, device) < self.p

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Return the transformed batch (a new object; the input is not modified)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order.

    Args:
        transforms: The transforms (any callables ``(batch, generator) -> batch``).

    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        super().__init__(1.0)
        self.transforms = list(transforms)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Apply every transform in turn."""
        for t in self.transforms:
            batch = t(batch, generator)
        return batch

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)


class RandomTemporalWindow(Transform):
    """Keep a random contiguous window of timesteps of every sample; months travel with their steps.

    Each sample draws a window length ``L`` uniformly in ``[min_len, min(max_len, T)]`` and a start
    uniformly in ``[0, T - L]``; its kept steps move to positions ``0 .. L-1`` together with their
    values, mask, month and Dynamic World class. The output stays rectangular: its length is the longest
    window of the batch, ``T' = max(L)``, and shorter windows are padded at the end with missing steps
    (``mask`` True, ``x`` 0, Dynamic World 9; their month continues the calendar so it stays in 0-11).
    With ``min_len == max_len`` every view has exactly that length (DINO's local views). A sample the
    transform is not applied to (probability ``1 - p``) keeps its full sequence, so then ``T' = T``.

    The static SRTM bands are read by the encoder from the first step, which is always a kept step.

    Args:
        min_len: Shortest window, in timesteps (must be <= T of the batch).
        max_len: Longest window (default: T); values above T are clipped to T.
        p: Probability of cropping a sample.

    """

    def __init__(self, min_len: int, max_len: int | None = None, p: float = 1.0) -> None:
        super().__init__(p)
        if int(min_len) < 1:
            raise ValueError(f"min_len must be >= 1 timestep, got {min_len}")
        if max_len is not None and int(max_len) < int(min_len):
            raise ValueError(f"max_len ({max_len}) must be >= min_len ({min_len})")
        self.min_len = int(min_len)
        self.max_len = None if max_len is None else int(max_len)

    def lengths(self, T: int) -> tuple[int, int]:
        """The ``(min, max)`` window length for sequences of ``T`` steps.

        Raises:
            ValueError: If ``T < min_len``.

        """
        if self.min_len > T:
            raise ValueError(
                f"sequences have T={T} timesteps, too short for a temporal window of min_len={self.min_len}; "
                f"lower min_len or use longer sequences"
            )
        hi = T if self.max_len is None else min(self.max_len, T)
        return self.min_len, hi

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Crop every sample to its window (see the class docstring)."""
        if self.p == 0:  # never applied: no length requirement, no random draws
            return batch
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        lo, hi = self.lengths(T)
        applied = self._applied(B, generator, dev)
        length = lo + (_rand((B,), generator, dev) * (hi - lo + 1)).long().clamp(max=hi - lo)
        length = torch.where(applied, length, torch.full_like(length, T))
        start = (_rand((B,), generator, dev) * (T - length + 1)).long()
        start = torch.minimum(start, T - length)
        out_T = int(length.max())
        pos = torch.arange(out_T, device=dev)[None, :]  # [1, T']
        valid = pos < length[:, None]  # [B, T']
        last = start[:, None] + length[:, None] - 1
        idx = torch.minimum(start[:, None] + pos, last)  # [B, T'], padding repeats the last kept step
        idx3 = idx[:, :, None].expand(B, out_T, NUM_BANDS)
        pad = ~valid
        x = batch.x.gather(1, idx3).masked_fill(pad[:, :, None], 0.0)
        mask = batch.mask.gather(1, idx3) | pad[:, :, None]
        overflow = (pos - (length[:, None] - 1)).clamp(min=0)  # 1, 2, ... on padded steps
        month = torch.remainder(batch.month.gather(1, idx) + overflow, 12)
        changes = {"x": x, "mask": mask, "month": month}
        if batch.dynamic_world is not None:
            changes["dynamic_world"] = batch.dynamic_world.gather(1, idx).masked_fill(pad, DW_MISSING)
        return batch.replace(**changes)


class TimestepDropout(Transform):
    """Hide whole timesteps: all dynamic bands (and Dynamic World) of a step; static SRTM bands stay.

    Each step of an affected sample is dropped with probability ``p_step``; one random step per sample
    is always spared, so a view never loses every step to this transform.

    Args:
        p_step: Probability of dropping each timestep.
        p: Probability that a sample is affected at all.
        drop_dynamic_world: Also hide the Dynamic World class of dropped steps.

    """

    def __init__(self, p_step: float, p: float = 1.0, drop_dynamic_world: bool = True) -> None:
        super().__init__(p)
        self.p_step = _check_prob("p_step", p_step)
        self.drop_dynamic_world = bool(drop_dynamic_world)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Drop random timesteps."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        applied = self._applied(B, generator, dev)
        scores = _rand((B, T), generator, dev)
        drop = scores < self.p_step
        spare = scores.argmax(dim=1, keepdim=True)  # the step least likely to be dropped
        drop = drop.scatter(1, spare, False) & applied[:, None]
        hide = drop[:, :, None] & ~_STATIC_BANDS.to(dev)
        return _apply_mask(batch, hide, drop if self.drop_dynamic_world else None)


class SensorDropout(Transform):
    """Hide all Sentinel-1 bands or all Sentinel-2 bands (incl. NDVI) of a sample, never both.

    With probability ``p`` a sample loses one sensor, chosen at random (``p_s1`` for S1). Only samples
    where both sensors have at least one present value are touched; a sample that already lacks one
    sensor entirely keeps the other, so a view never ends up with neither sensor by this transform.
    SAR sees through clouds and optical does not: the model must cope with either alone.

    Args:
        p: Probability that a sample loses a sensor.
        p_s1: Probability that the dropped sensor is S1 (else S2).
        drop_dynamic_world: Hide Dynamic World (derived from S2) together with S2.

    """

    def __init__(self, p: float = 0.2, p_s1: float = 0.5, drop_dynamic_world: bool = True) -> None:
        super().__init__(p)
        self.p_s1 = _check_prob("p_s1", p_s1)
        self.drop_dynamic_world = bool(drop_dynamic_world)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Drop one sensor of some samples."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        s1, s2 = _S1_BANDS.to(dev), _S2_BANDS.to(dev)
        present = ~batch.mask
        has_s1 = (present & s1).flatten(1).any(1)
        has_s2 = (present & s2).flatten(1).any(1)
        applied = self._applied(B, generator, dev)
        pick_s1 = _rand((B,), generator, dev) < self.p_s1
        # a sensor is dropped only where both are present, so the other one always stays
        fires = applied & has_s1 & has_s2
        drop_s1 = fires & pick_s1
        drop_s2 = fires & ~pick_s1
        bands = (drop_s1[:, None] & s1[None, :]) | (drop_s2[:, None] & s2[None, :])  # [B, 17]
        hide = bands[:, None, :].expand(B, T, NUM_BANDS)
        hide_dw = drop_s2[:, None].expand(B, T) if self.drop_dynamic_world else None
        return _apply_mask(batch, hide, hide_dw)


class ChannelGroupDropout(Transform):
    """Hide whole channel groups of a sample (all timesteps), keeping at least one group present.

    Each group of ``groups`` is dropped with probability ``p_group``. If that would leave a sample with no
    present value at all, its present group with the best draw is kept.

    Args:
        p_group: Probability of dropping each group.
        p: Probability that a sample is affected at all.
        groups: Droppable groups (names of :data:`~cropssl.schema.BAND_GROUPS`); default all of them.

    """

    def __init__(self, p_group: float, p: float = 1.0, groups: Sequence[str] | None = None) -> None:
        super().__init__(p)
        self.p_group = _check_prob("p_group", p_group)
        self.groups = tuple(GROUP_NAMES if groups is None else groups)
        unknown = [g for g in self.groups if g not in BAND_GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"unknown channel groups {unknown}; expected names from {list(GROUP_NAMES)}")
        self._members = torch.stack([band_mask([g]) for g in GROUP_NAMES])  # [G, 17]
        self._droppable = torch.tensor([g in self.groups for g in GROUP_NAMES])

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Drop random channel groups."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        members = self._members.to(dev)
        applied = self._applied(B, generator, dev)
        scores = _rand((B, len(GROUP_NAMES)), generator, dev)
        drop = (scores < self.p_group) & self._droppable.to(dev)[None, :] & applied[:, None]
        present = ((~batch.mask).any(1).float() @ members.T.float()) > 0  # [B, G] group has a value
        lost_all = present.any(1) & ~(present & ~drop).any(1)
        keep = torch.where(present, scores, torch.full_like(scores, -1.0)).argmax(1, keepdim=True)
        drop = drop & ~(torch.zeros_like(drop).scatter(1, keep, True) & lost_all[:, None])
        bands = (drop.float() @ members.float()) > 0  # [B, 17]
        return _apply_mask(batch, bands[:, None, :].expand(B, T, NUM_BANDS))


class SyntheticCloudMask(Transform):
    """Hide the Sentinel-2 bands and NDVI at random timesteps, like clouds; S1, ERA5 and SRTM stay.

    Args:
        p_cloud: Probability that each timestep of an affected sample is cloudy.
        p: Probability that a sample is affected at all.
        drop_dynamic_world: Hide Dynamic World (derived from S2) at cloudy steps too.

    """

    def __init__(self, p_cloud: float, p: float = 1.0, drop_dynamic_world: bool = True) -> None:
        super().__init__(p)
        self.p_cloud = _check_prob("p_cloud", p_cloud)
        self.drop_dynamic_world = bool(drop_dynamic_world)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Cloud random timesteps."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        applied = self._applied(B, generator, dev)
        cloudy = (_rand((B, T), generator, dev) < self.p_cloud) & applied[:, None]
        hide = cloudy[:, :, None] & _S2_BANDS.to(dev)
        return _apply_mask(batch, hide, cloudy if self.drop_dynamic_world else None)


def _per_band(std: float | Sequence[float], name: str) -> Tensor:
    values = [float(std)] if isinstance(std, (int, float)) else [float(v) for v in std]
    t = torch.tensor(values, dtype=torch.float32)
    if t.numel() not in (1, NUM_BANDS):
        raise ValueError(f"{name} must be a number or {NUM_BANDS} per-band numbers, got {t.numel()}")
    if (t < 0).any():
        raise ValueError(f"{name} must be >= 0")
    return t.expand(NUM_BANDS).clone()


class GaussianNoise(Transform):
    """Add Gaussian noise (normalised units) to the present values; missing values stay exactly 0.

    Args:
        std: Noise standard deviation, one number or one per band (17).
        p: Probability that a sample gets noise.

    """

    def __init__(self, std: float | Sequence[float] = 0.02, p: float = 1.0) -> None:
        super().__init__(p)
        self.std = _per_band(std, "std")

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Add noise."""
        B = len(batch)
        dev = batch.x.device
        applied = self._applied(B, generator, dev)
        noise = _randn(batch.x.shape, generator, dev).to(batch.x.dtype) * self.std.to(dev, batch.x.dtype)
        noise = noise * applied[:, None, None]
        return batch.replace(x=(batch.x + noise).masked_fill(batch.mask, 0.0))


class LatLonJitter(Transform):
    """Move a sample's location by Gaussian noise, so two views of a pixel disagree on where it is.

    Both views otherwise share the lat/lon token exactly, and a joint-embedding objective can then be
    met by encoding the location alone (measured: SimCLR's and Barlow Twins' transfer to a held-out
    region collapses; ``experiments/ssl_quality``). The noise keeps the region, hides the pixel.
    Latitude is clipped to [-90, 90], longitude wrapped to [-180, 180).

    Args:
        std_deg: Noise standard deviation in degrees (both coordinates).
        p: Probability that a sample's location moves.

    """

    def __init__(self, std_deg: float = 1.0, p: float = 1.0) -> None:
        super().__init__(p)
        if float(std_deg) < 0:
            raise ValueError(f"std_deg must be >= 0 degrees, got {std_deg}")
        self.std_deg = float(std_deg)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Move the locations (samples it is not applied to keep theirs exactly)."""
        if self.p == 0 or self.std_deg == 0:
            return batch
        dev = batch.latlon.device
        applied = self._applied(len(batch), generator, dev)
        moved = (
            batch.latlon + _randn(batch.latlon.shape, generator, dev).to(batch.latlon.dtype) * self.std_deg
        )
        lat = moved[:, 0].clamp(-90.0, 90.0)
        lon = torch.remainder(moved[:, 1] + 180.0, 360.0) - 180.0
        return batch.replace(latlon=torch.where(applied[:, None], torch.stack([lat, lon], 1), batch.latlon))


class MultiplicativeJitter(Transform):
    """Scale each band of a sample by ``1 + std * N(0, 1)`` (one factor per sample and band, all steps).

    A per-sample, per-band gain, like a calibration difference between acquisitions; applied to the
    normalised values, so missing values (0) stay exactly 0.

    Args:
        std: Standard deviation of the gain, one number or one per band (17).
        p: Probability that a sample is jittered.

    """

    def __init__(self, std: float | Sequence[float] = 0.05, p: float = 1.0) -> None:
        super().__init__(p)
        self.std = _per_band(std, "std")

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Scale the bands."""
        B = len(batch)
        dev = batch.x.device
        applied = self._applied(B, generator, dev)
        gain = _randn((B, 1, NUM_BANDS), generator, dev).to(batch.x.dtype) * self.std.to(dev, batch.x.dtype)
        gain = 1.0 + gain * applied[:, None, None]
        return batch.replace(x=(batch.x * gain).masked_fill(batch.mask, 0.0))


def _windows(transform: object) -> list[RandomTemporalWindow]:
    """The temporal windows inside a transform (itself or nested in :class:`Compose`)."""
    if isinstance(transform, RandomTemporalWindow):
        return [transform]
    if isinstance(transform, Compose):
        return [w for t in transform.transforms for w in _windows(t)]
    return []


class ViewGenerator:
    """Make the views of a batch: ``n_global`` global views, then ``n_local`` local (shorter) views.

    Each view is drawn independently from the same input batch. ``global_transform=None`` makes global
    views that are the input itself (no augmentation). Local views, for DINO's multi-crop, see less of
    the pixel than the global ones: shorter temporal windows (a :class:`RandomTemporalWindow` with
    ``max_len`` below the sequence length) or the whole season with more of it hidden (the default).

    Args:
        global_transform: Transform of the global views (None = identity).
        n_global: Number of global views (>= 1).
        local_transform: Transform of the local views (required if ``n_local > 0``).
        n_local: Number of local views.

    Raises:
        ValueError: On inconsistent view counts.

    """

    def __init__(
        self,
        global_transform: Transform | None = None,
        n_global: int = 2,
        local_transform: Transform | None = None,
        n_local: int = 0,
    ) -> None:
        if int(n_global) < 1:
            raise ValueError(f"n_global must be >= 1, got {n_global}")
        if int(n_local) < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}")
        if n_local and local_transform is None:
            raise ValueError(
                f"n_local={n_local} local views need a local_transform (e.g. a shorter temporal window, "
                "or more clouds: configs/augment/dino.yaml)"
            )
        self.global_transform = global_transform
        self.n_global = int(n_global)
        self.local_transform = local_transform
        self.n_local = int(n_local)

    @property
    def n_views(self) -> int:
        """Total number of views per call."""
        return self.n_global + self.n_local

    def local_len(self) -> int | None:
        """Longest local view the local transform can make (its shortest applied window's ``max_len``).

        None when no window applies: local views that keep the whole season and hide more of it.
        """
        lens = [w.max_len for w in _windows(self.local_transform) if w.max_len is not None and w.p > 0]
        return min(lens) if lens else None

    def check(self, T: int) -> None:
        """Check that sequences of ``T`` steps can make the configured views.

        Raises:
            ValueError: If T is below the ``min_len`` of a window that can be applied, or windowed local
                views are requested and ``T <= local_len`` (they would not be shorter than the global ones).

        """
        for w in _windows(self.global_transform) + _windows(self.local_transform):
            if w.p > 0 and w.min_len > T:  # a window that is never applied needs no length
                raise ValueError(
                    f"sequences have T={T} timesteps, too short for the requested temporal window "
                    f"min_len={w.min_len}; lower min_len or use longer sequences"
                )
        if self.n_local:
            local_len = self.local_len()
            if local_len is not None and local_len >= T:
                raise ValueError(
                    f"DINO local views need T > local_len (the local window's max_len): got T={T}, "
                    f"local_len={local_len}; lower the local max_len below T, use longer sequences, or "
                    f"set n_local=0"
                )

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> list[Batch]:
        """Return ``n_global`` global views followed by ``n_local`` local views of ``batch``."""
        self.check(int(batch.x.shape[1]))
        views = [
            batch if self.global_transform is None else self.global_transform(batch, generator)
            for _ in range(self.n_global)
        ]
        if self.n_local:
            assert self.local_transform is not None
            views += [self.local_transform(batch, generator) for _ in range(self.n_local)]
        return views

    def __repr__(self) -> str:
        return (
            f"ViewGenerator(global_transform={self.global_transform!r}, n_global={self.n_global}, "
            f"local_transform={self.local_transform!r}, n_local={self.n_local})"
        )
