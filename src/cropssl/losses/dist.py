"""Distributed helpers for losses: rank / world size and a differentiable all-gather.

Contrastive and redundancy-reduction losses need the whole global batch (negatives from every process,
batch statistics over all samples). :func:`gather` concatenates a tensor's first dimension over all
processes while keeping the autograd graph.

Backward convention. With DDP every process ``r`` computes a loss ``L_r`` on the gathered batch and DDP
*averages* the parameter gradients over the ``R`` processes. The gradient that reaches this process's
local slice ``x_r`` must therefore be ``sum_s dL_s / dx_r``: the incoming gradient of the gathered
tensor is all-reduced with SUM and this process's slice is returned. Then the DDP-averaged gradient is
exactly ``d/dW (1/R sum_s L_s)``, i.e. one process computing the mean loss over the global batch
(lightly issue #1977: a backward without the SUM all-reduce makes gradients ``1/R`` too small;
``tests/test_losses_distributed.py`` checks the equality on two gloo processes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes (1 when ``torch.distributed`` is not initialised)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process (0 when ``torch.distributed`` is not initialised)."""
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward all-reduces (SUM) the gradient and keeps the local slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank = dist.get_rank()
        ctx.n = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.n
        return grad[start : start + ctx.n]


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all processes along dim 0, differentiably.

    Every process must pass a tensor of the same shape (equal per-process batch sizes). The result is
    ordered by rank, so this process's rows are ``[rank() * N, (rank() + 1) * N)``. Returns ``x``
    unchanged when ``torch.distributed`` is not initialised or the world size is 1.

    Args:
        x: Local tensor ``[N, ...]``.

    Returns:
        ``[world_size() * N, ...]``; gradients flow back to every process's local slice.

    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
