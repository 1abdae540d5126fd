"""Input checks shared by the losses."""

from __future__ import annotations

from torch import Tensor


def check_pair(a: Tensor, b: Tensor, names: tuple[str, str] = ("z0", "z1")) -> None:
    """Refuse two embedding batches that are not 2-D ``[N, D]`` tensors of the same shape, naming them."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must be 2-D [N, D] tensors of the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
