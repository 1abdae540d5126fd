"""The views of a batch for a method: global views, and DINO's local ones."""

from __future__ import annotations

import torch

from cropssl.schema import Batch
from cropssl.views.base import Compose, Transform
from cropssl.views.masks import RandomTemporalWindow


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
