"""Contrastive (InfoNCE) losses: SimCLR's NT-Xent and MoCo v3's symmetric-by-the-method ``ctr``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.losses import dist
from cropssl.losses.checks import check_pair, in_fp32


class NTXentLoss(nn.Module):
    """SimCLR's normalised-temperature cross-entropy (Chen et al. 2020, eq. 1).

    Embeddings are L2-normalised. Each of the ``2N`` local anchors (both views) has one positive (the
    other view of the same sample) and ``2M - 2`` negatives, ``M`` being the global batch size: both
    views of every other sample, from all processes when ``gather_distributed``. The loss is the mean
    over the local anchors of ``-log(exp(s_pos / T) / sum_{k != anchor} exp(s_k / T))``.

    Args:
        temperature: Softmax temperature ``T``.
        gather_distributed: Take negatives from all processes (differentiable all-gather).

    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    @in_fp32
    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            z0: Projections of view 0 ``[N, D]``.
            z1: Projections of view 1 ``[N, D]`` (row ``i`` is the positive of ``z0[i]``).

        Returns:
            Scalar loss.

        """
        check_pair(z0, z1, ("z0", "z1"))
        n = z0.shape[0]
        z0 = F.normalize(z0, dim=1)
        z1 = F.normalize(z1, dim=1)
        if self.gather_distributed:
            z0_all, z1_all, offset = dist.gather(z0), dist.gather(z1), dist.rank() * n
        else:
            z0_all, z1_all, offset = z0, z1, 0
        m = z0_all.shape[0]
        anchors = torch.cat([z0, z1], dim=0)  # [2N, D]
        candidates = torch.cat([z0_all, z1_all], dim=0)  # [2M, D]
        logits = anchors @ candidates.T / self.temperature
        local = torch.arange(n, device=z0.device) + offset
        self_idx = torch.cat([local, local + m])
        pos_idx = torch.cat([local + m, local])
        rows = torch.arange(2 * n, device=z0.device)
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[rows, self_idx] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(logits, pos_idx)


class MoCoV3Loss(nn.Module):
    """MoCo v3's contrastive loss ``ctr(q, k)`` (Chen, Xie & He 2021, Algorithm 1).

    ``ctr(q, k) = CrossEntropy(normalize(q) @ normalize(k_all).T / T, labels) * 2 * T`` with
    ``labels = rank * N + arange(N)``: the positive of query ``i`` is its own key; the other keys of
    the global batch (all processes when ``gather_distributed``) are the negatives. ``k`` comes from
    the momentum encoder and is detached. The method symmetrises: ``ctr(q0, k1) + ctr(q1, k0)``.

    Args:
        temperature: Softmax temperature ``T``.
        gather_distributed: Gather the keys of all processes.

    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    @in_fp32
    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """Compute ``ctr(q, k)``.

        Args:
            q: Queries (student predictions) ``[N, D]``.
            k: Keys (momentum-encoder projections) ``[N, D]``; detached here.

        Returns:
            Scalar loss.

        """
        check_pair(q, k, ("q", "k"))
        n = q.shape[0]
        q = F.normalize(q, dim=1)
        k = F.normalize(k.detach(), dim=1)
        offset = 0
        if self.gather_distributed:
            k = dist.gather(k)
            offset = dist.rank() * n
        logits = q @ k.T / self.temperature
        labels = torch.arange(n, device=q.device) + offset
        return F.cross_entropy(logits, labels) * (2 * self.temperature)
