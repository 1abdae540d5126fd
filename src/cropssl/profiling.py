"""Cost of a model in multiply-accumulates (MACs).

Counted with ``torch.utils.flop_counter``: linear layers, matmuls and attention; element-wise operations
are not counted. On CPU, ``F.scaled_dot_product_attention`` dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu`` (and its backward), which the flop counter of
torch <= 2.14 does not know (it counts 0 for them); :func:`flop_counter` registers them with torch's own
SDPA formulas (``QK^T`` and ``AV``: ``2 * B * H * L * S * E`` FLOPs each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cropssl.schema import BAND_INDEX, DW_MISSING, NUM_BANDS, Batch


def _cpu_sdpa_flops(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> Any:
    """A ``FlopCounterMode`` (no display) that also counts the CPU attention kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping: dict[Any, Any] = {}
    aten = torch.ops.aten
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_macs(fn: Callable[[], Any]) -> int:
    """MACs of one call of ``fn`` (FLOPs / 2 as counted by :func:`flop_counter`)."""
    with flop_counter() as fc:
        fn()
    return int(fc.get_total_flops() // 2)


def dense_batch(batch_size: int, timesteps: int = 12, seed: int = 0) -> Batch:
    """A normalised batch with every value present (the worst case for token-masked encoders)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, timesteps, NUM_BANDS, generator=g)
    b8, b4 = x[..., BAND_INDEX["B8"]], x[..., BAND_INDEX["B4"]]
    x[..., BAND_INDEX["NDVI"]] = (b8 - b4) / (b8 + b4)
    start = torch.randint(0, 12, (batch_size, 1), generator=g)
    return Batch(
        x=x,
        mask=torch.zeros(batch_size, timesteps, NUM_BANDS, dtype=torch.bool),
        month=(start + torch.arange(timesteps)) % 12,
        latlon=torch.stack([torch.rand(batch_size) * 180 - 90, torch.rand(batch_size) * 360 - 180], 1),
        dynamic_world=torch.full((batch_size, timesteps), DW_MISSING),
        label=torch.full((batch_size,), -1),
    )


def encoder_macs_per_sample(encoder: nn.Module, timesteps: int = 12, batch_size: int = 8) -> float:
    """Inference MACs per pixel of an encoder at ``timesteps`` with all tokens present."""
    batch = dense_batch(batch_size, timesteps)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        macs = count_macs(lambda: encoder(batch))
    encoder.train(was_training)
    return macs / batch_size


def train_step_macs_per_sample(method: Any, timesteps: int = 12, batch_size: int = 16) -> float:
    """MACs per pixel of one training step (views, forward of all branches, backward) of a method.

    Runs ``method.shared_step`` and ``backward`` on a dense random batch; the method's generator state
    and its parameters' gradients are restored afterwards, so calling it after training changes nothing.
    Random views (e.g. temporal windows) make the count vary slightly between calls.
    """
    state = method.rng.get_state()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in method.named_parameters()}
    buffers = {n: b.clone() for n, b in method.named_buffers()}
    was_training = method.training
    method.train()
    batch = dense_batch(batch_size, timesteps)

    def step() -> None:
        loss, _ = method.shared_step(batch)
        loss.backward()

    try:
        macs = count_macs(step)
    finally:
        method.rng.set_state(state)
        for n, p in method.named_parameters():
            p.grad = grads[n]
        own = dict(method.named_buffers())
        with torch.no_grad():
            for n, b in buffers.items():
                own[n].copy_(b)
        method.train(was_training)
    return macs / batch_size
