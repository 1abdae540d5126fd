"""Input checks and numerical precision shared by the losses."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])


def in_fp32(forward: F) -> F:
    """Run a loss's ``forward`` in fp32 with autocast off, whatever precision the model ran in.

    Under mixed precision (``trainer.precision=bf16-mixed`` / ``16-mixed``) the embeddings arrive in
    bfloat16 / float16, and autocast would also run the loss's own matrix products (cross-correlation,
    similarity logits, covariance) in it: sums over thousands of terms with 8 bits of mantissa. Every
    loss therefore casts its half-precision tensor arguments (and lists of them) to fp32 and computes
    with autocast disabled (gradients flow back through the cast).
    """

    def cast(v: Any) -> Any:
        if isinstance(v, (list, tuple)):  # DINO's per-view outputs
            return type(v)(cast(x) for x in v)
        low = isinstance(v, Tensor) and v.dtype in (torch.float16, torch.bfloat16)
        return v.float() if low else v  # fp32 / fp64 inputs stay as they are

    def tensors(vs: Any) -> Iterator[Tensor]:
        for v in vs:
            if isinstance(v, (list, tuple)):
                yield from tensors(v)
            elif isinstance(v, Tensor):
                yield v

    @functools.wraps(forward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        device = next((t.device.type for t in tensors((*args, *kwargs.values()))), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return forward(self, *map(cast, args), **{k: cast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def check_pair(a: Tensor, b: Tensor, names: tuple[str, str] = ("z0", "z1")) -> None:
    """Refuse two embedding batches that are not 2-D ``[N, D]`` tensors of the same shape, naming them."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must be 2-D [N, D] tensors of the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
