"""Views that hide data or re-index time: windows, timestep / sensor / channel-group dropout, clouds."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cropssl.schema import BAND_GROUPS, DW_MISSING, GROUP_NAMES, NUM_BANDS, Batch
from cropssl.views.base import (
    S1_BANDS,
    S2_BANDS,
    STATIC_BANDS,
    Transform,
    apply_mask,
    band_mask,
    check_prob,
    rand,
)


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
        length = lo + (rand((B,), generator, dev) * (hi - lo + 1)).long().clamp(max=hi - lo)
        length = torch.where(applied, length, torch.full_like(length, T))
        start = (rand((B,), generator, dev) * (T - length + 1)).long()
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
        self.p_step = check_prob("p_step", p_step)
        self.drop_dynamic_world = bool(drop_dynamic_world)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Drop random timesteps."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        applied = self._applied(B, generator, dev)
        scores = rand((B, T), generator, dev)
        drop = scores < self.p_step
        spare = scores.argmax(dim=1, keepdim=True)  # the step least likely to be dropped
        drop = drop.scatter(1, spare, False) & applied[:, None]
        hide = drop[:, :, None] & ~STATIC_BANDS.to(dev)
        return apply_mask(batch, hide, drop if self.drop_dynamic_world else None)


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
        self.p_s1 = check_prob("p_s1", p_s1)
        self.drop_dynamic_world = bool(drop_dynamic_world)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Drop one sensor of some samples."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        s1, s2 = S1_BANDS.to(dev), S2_BANDS.to(dev)
        present = ~batch.mask
        has_s1 = (present & s1).flatten(1).any(1)
        has_s2 = (present & s2).flatten(1).any(1)
        applied = self._applied(B, generator, dev)
        pick_s1 = rand((B,), generator, dev) < self.p_s1
        # a sensor is dropped only where both are present, so the other one always stays
        fires = applied & has_s1 & has_s2
        drop_s1 = fires & pick_s1
        drop_s2 = fires & ~pick_s1
        bands = (drop_s1[:, None] & s1[None, :]) | (drop_s2[:, None] & s2[None, :])  # [B, 17]
        hide = bands[:, None, :].expand(B, T, NUM_BANDS)
        hide_dw = drop_s2[:, None].expand(B, T) if self.drop_dynamic_world else None
        return apply_mask(batch, hide, hide_dw)


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
        self.p_group = check_prob("p_group", p_group)
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
        scores = rand((B, len(GROUP_NAMES)), generator, dev)
        drop = (scores < self.p_group) & self._droppable.to(dev)[None, :] & applied[:, None]
        present = ((~batch.mask).any(1).float() @ members.T.float()) > 0  # [B, G] group has a value
        lost_all = present.any(1) & ~(present & ~drop).any(1)
        keep = torch.where(present, scores, torch.full_like(scores, -1.0)).argmax(1, keepdim=True)
        drop = drop & ~(torch.zeros_like(drop).scatter(1, keep, True) & lost_all[:, None])
        bands = (drop.float() @ members.float()) > 0  # [B, 17]
        return apply_mask(batch, bands[:, None, :].expand(B, T, NUM_BANDS))


class SyntheticCloudMask(Transform):
    """Hide the Sentinel-2 bands and NDVI at random timesteps, like clouds; S1, ERA5 and SRTM stay.

    Args:
        p_cloud: Probability that each timestep of an affected sample is cloudy.
        p: Probability that a sample is affected at all.
        drop_dynamic_world: Hide Dynamic World (derived from S2) at cloudy steps too.

    """

    def __init__(self, p_cloud: float, p: float = 1.0, drop_dynamic_world: bool = True) -> None:
        super().__init__(p)
        self.p_cloud = check_prob("p_cloud", p_cloud)
        self.drop_dynamic_world = bool(drop_dynamic_world)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Cloud random timesteps."""
        B, T = batch.x.shape[:2]
        dev = batch.x.device
        applied = self._applied(B, generator, dev)
        cloudy = (rand((B, T), generator, dev) < self.p_cloud) & applied[:, None]
        hide = cloudy[:, :, None] & S2_BANDS.to(dev)
        return apply_mask(batch, hide, cloudy if self.drop_dynamic_world else None)


class LatLonDropout(Transform):
    """Hide a sample's location: its lat/lon becomes NaN, so the encoder leaves the lat/lon token out.

    Two views of a pixel share the location exactly, and a joint-embedding objective can be met by
    encoding the location alone (``experiments/ssl_quality``: the transfer of Barlow Twins, VICReg, BYOL
    and MoCo v3 to a held-out region collapses with the token and recovers without it). Drawn per view,
    ``p = 0.5`` gives half the pairs the location in one view only: the objective then asks the embedding
    not to depend on the location beyond what the pixel's data says, while the encoder keeps its
    lat/lon token (Presto's weights and every export carry it) and still sees it in most views.

    Args:
        p: Probability that a sample's location is hidden.

    """

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Hide the locations of some samples (the others keep theirs exactly)."""
        if self.p == 0:  # no random draws: configs that leave it off keep their views bit for bit
            return batch
        applied = self._applied(len(batch), generator, batch.latlon.device)
        return batch.replace(latlon=batch.latlon.masked_fill(applied[:, None], float("nan")))
