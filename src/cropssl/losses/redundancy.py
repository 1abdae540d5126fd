"""Redundancy-reduction losses: Barlow Twins and VICReg.

Both use batch statistics; with ``gather_distributed`` they are computed over the global batch through
the differentiable :func:`cropssl.losses.dist.gather`, so the result does not depend on how the batch is
split over processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.losses import dist
from cropssl.losses.checks import check_pair, in_fp32


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal elements of a square matrix, flattened."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar et al. 2021, eq. 1).

    Each dimension is batch-normalised over the (global) batch exactly as the official code's
    ``nn.BatchNorm1d(affine=False)`` in training mode: ``(z - mean) / sqrt(biased_var + eps)``. Then
    ``c = z0n.T @ z1n / N`` and ``loss = sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2``.

    Args:
        lambda_: Weight of the redundancy-reduction (off-diagonal) term.
        gather_distributed: Compute the statistics and ``c`` over the batches of all processes.
        eps: Variance epsilon of the batch normalisation.

    """

    def __init__(self, lambda_: float = 0.0051, gather_distributed: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)
        self.gather_distributed = gather_distributed
        self.eps = float(eps)

    def _normalise(self, z: Tensor) -> Tensor:
        mean = z.mean(dim=0, keepdim=True)
        var = z.var(dim=0, unbiased=False, keepdim=True)
        return (z - mean) / torch.sqrt(var + self.eps)

    @in_fp32
    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            z0: Projections of view 0 ``[N, D]``.
            z1: Projections of view 1 ``[N, D]``.

        Returns:
            Scalar loss.

        """
        check_pair(z0, z1)
        if self.gather_distributed:
            z0, z1 = dist.gather(z0), dist.gather(z1)
        n = z0.shape[0]
        if n < 2:
            raise ValueError(f"BarlowTwinsLoss needs a (global) batch of at least 2 samples, got {n}")
        c = self._normalise(z0).T @ self._normalise(z1) / n
        on_diag = (1 - torch.diagonal(c)).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
        return on_diag + self.lambda_ * off_diag


class VICRegLoss(nn.Module):
    """VICReg (Bardes et al. 2022), in the form of the official code (facebookresearch/vicreg).

    - invariance: ``MSE(z0, z1)`` averaged over all elements of the local batch (as the official code,
      which computes it before gathering; DDP's gradient averaging makes it the global mean);
    - variance: ``mean_d relu(gamma - sqrt(Var(z0)_d + eps)) / 2 + mean_d relu(gamma - sqrt(Var(z1)_d
      + eps)) / 2`` with the unbiased variance over the global batch (the official ``std_loss``, i.e.
      the average of the two branches);
    - covariance: ``sum_{i != j} C(z0)_ij^2 / D + sum_{i != j} C(z1)_ij^2 / D`` with
      ``C(z) = (z - mean).T @ (z - mean) / (N - 1)`` over the global batch;

    ``loss = sim * invariance + var * variance + cov * covariance``.

    Args:
        sim: Invariance weight (lambda in the paper).
        var: Variance weight (mu).
        cov: Covariance weight (nu).
        gamma: Target standard deviation.
        eps: Variance epsilon.
        gather_distributed: Compute variance and covariance over the batches of all processes.

    """

    def __init__(
        self,
        sim: float = 25.0,
        var: float = 25.0,
        cov: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.sim = float(sim)
        self.var = float(var)
        self.cov = float(cov)
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.gather_distributed = gather_distributed

    def terms(self, z0: Tensor, z1: Tensor) -> dict[str, Tensor]:
        """The unweighted ``invariance``, ``variance`` and ``covariance`` terms (for logging)."""
        check_pair(z0, z1)
        invariance = F.mse_loss(z0, z1)
        if self.gather_distributed:
            z0, z1 = dist.gather(z0), dist.gather(z1)
        n, d = z0.shape
        if n < 2:
            raise ValueError(f"VICRegLoss needs a (global) batch of at least 2 samples, got {n}")
        variance = z0.new_zeros(())
        covariance = z0.new_zeros(())
        for z in (z0, z1):
            z = z - z.mean(dim=0)
            std = torch.sqrt(z.var(dim=0) + self.eps)
            variance = variance + F.relu(self.gamma - std).mean() / 2
            c = z.T @ z / (n - 1)
            covariance = covariance + off_diagonal(c).pow(2).sum() / d
        return {"invariance": invariance, "variance": variance, "covariance": covariance}

    @in_fp32
    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Compute the weighted loss.

        Args:
            z0: Projections of view 0 ``[N, D]``.
            z1: Projections of view 1 ``[N, D]``.

        Returns:
            Scalar loss.

        """
        t = self.terms(z0, z1)
        return self.sim * t["invariance"] + self.var * t["variance"] + self.cov * t["covariance"]
