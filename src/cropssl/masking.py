"""Masking strategies for masked modelling, Presto-style, vectorised over the batch.

Masks live on the *token grid* ``[B, T, G]`` of the dynamic channel groups (G = 8 for the full band
set: every (timestep, group) pair is one encoder token). Each sample draws one strategy:

``random``
    tokens chosen uniformly at random;
``channel_groups``
    ``floor(ratio * G)`` whole channel groups, topped up with random tokens;
``random_timesteps``
    ``floor(ratio * T)`` whole timesteps chosen at random, topped up with random tokens;
``contiguous_timesteps``
    one contiguous block of ``floor(ratio * T)`` timesteps, topped up with random tokens.

Every strategy masks exactly ``round(ratio * T * G)`` tokens per sample. Tokens that are already
missing in the data stay hidden whatever the strategy says and are never reconstruction targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

STRATEGIES: tuple[str, ...] = ("random", "channel_groups", "random_timesteps", "contiguous_timesteps")


def _topk_units(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` highest-scoring entries along the last axis."""
    out = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        out.scatter_(-1, scores.topk(k, dim=-1).indices, True)
    return out


class MaskGenerator:
    """Draw MIM masks on the ``[B, T, G]`` token grid.

    Args:
        ratio: Fraction of tokens to mask (0 < ratio < 1).
        strategies: Subset of :data:`STRATEGIES`; one is drawn uniformly per sample.

    """

    def __init__(self, ratio: float = 0.75, strategies: Sequence[str] = STRATEGIES) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
        unknown = sorted(set(strategies) - set(STRATEGIES))
        if unknown or not strategies:
            raise ValueError(f"unknown masking strategies {unknown}; choose from {list(STRATEGIES)}")
        self.ratio = ratio
        self.strategies = tuple(strategies)

    def num_masked(self, T: int, G: int) -> int:
        """Tokens masked per sample on a T x G grid."""
        return round(self.ratio * T * G)

    def structured(self, strategy: str, B: int, T: int, G: int, generator: torch.Generator | None) -> Tensor:
        """The structured part (whole groups / timesteps) of a strategy, ``[B, T, G]`` bool."""
        dev = "cpu"
        if strategy == "random":
            return torch.zeros(B, T, G, dtype=torch.bool)
        if strategy == "channel_groups":
            g = _topk_units(torch.rand(B, G, generator=generator, device=dev), math.floor(self.ratio * G))
            return g[:, None, :].expand(B, T, G)
        n_t = math.floor(self.ratio * T)
        if strategy == "random_timesteps":
            t = _topk_units(torch.rand(B, T, generator=generator, device=dev), n_t)
        elif strategy == "contiguous_timesteps":
            start = torch.randint(0, T - n_t + 1, (B, 1), generator=generator, device=dev)
            steps = torch.arange(T)[None, :]
            t = (steps >= start) & (steps < start + n_t)
        else:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
        return t[:, :, None].expand(B, T, G)

    def __call__(
        self, B: int, T: int, G: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw masks.

        Returns:
            ``mask [B, T, G]`` bool (True = hidden from the encoder by the strategy) and the strategy
            index per sample ``[B]`` (into ``self.strategies``).

        """
        n = self.num_masked(T, G)
        if not 0 < n < T * G:
            raise ValueError(
                f"mask ratio {self.ratio} hides {n} of the {T * G} dynamic tokens at T={T} ({G} groups): "
                "it must leave at least one visible and hide at least one; choose another ratio or T"
            )
        choice = torch.randint(0, len(self.strategies), (B,), generator=generator)
        structured = torch.zeros(B, T, G, dtype=torch.bool)
        for i, name in enumerate(self.strategies):
            sel = choice == i
            if sel.any():
                structured |= self.structured(name, B, T, G, generator) & sel[:, None, None]
        # structured units first (score >= 2), then random tokens fill up to exactly n masked tokens
        scores = torch.rand(B, T * G, generator=generator) + 2.0 * structured.reshape(B, T * G)
        mask = _topk_units(scores, self.num_masked(T, G)).reshape(B, T, G)
        return mask, choice
