"""What every view shares: the :class:`Transform` base, :class:`Compose`, band selectors and seeded draws."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

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
STATIC_BANDS = band_mask(STATIC_GROUPS)
#: Sentinel-2 bands including NDVI.
S2_BANDS = band_mask(SENSOR_GROUPS["S2"])
S1_BANDS = band_mask(SENSOR_GROUPS["S1"])


def check_prob(name: str, value: float) -> float:
    """``value`` as a float, if it is a probability in [0, 1] (else a ValueError naming ``name``)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws on the generator's device (for reproducibility), returned on ``device``."""
    if generator is None:
        return torch.rand(tuple(shape), device=device)
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal draws, like :func:`rand`."""
    if generator is None:
        return torch.randn(tuple(shape), device=device)
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


def apply_mask(batch: Batch, hide: Tensor, hide_dw: Tensor | None = None) -> Batch:
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
        self.p = check_prob("p", p)

    def _applied(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``[n]`` bool: which samples the transform acts on this call."""
        return rand((n,), generator, device) < self.p

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Return the transformed batch (a new object; the input is not modified)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order.

    The configs name their transforms (``configs/augment/default.yaml``: ``transforms: {window: ...,
    noise: ...}``), so a derived view config changes one of them by name (Hydra merges mappings key by
    key, where it would replace a list whole) and a command line reads
    ``augment.global_transform.transforms.window.p=0.5``. A name mapped to None is left out.

    Args:
        transforms: The transforms (any callables ``(batch, generator) -> batch``), as a sequence or as a
            mapping name -> transform (applied in the mapping's order).

    """

    def __init__(self, transforms: Sequence[Transform] | Mapping[str, Transform | None]) -> None:
        super().__init__(1.0)
        named = transforms.items() if isinstance(transforms, Mapping) else enumerate(transforms)
        kept = [(str(k), t) for k, t in named if t is not None]
        self.names = tuple(k for k, _ in kept)
        self.transforms = [t for _, t in kept]

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Apply every transform in turn."""
        for t in self.transforms:
            batch = t(batch, generator)
        return batch

    def __getitem__(self, name: str | int) -> Transform:
        """The transform of that name (or position)."""
        if isinstance(name, int):
            return self.transforms[name]
        if name not in self.names:
            raise KeyError(f"no transform named {name!r} in this Compose; it has {list(self.names)}")
        return self.transforms[self.names.index(name)]

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(f"{k}={t!r}" for k, t in zip(self.names, self.transforms)) + ")"
