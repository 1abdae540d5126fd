"""VICReg (Bardes et al. 2022): invariance + variance + covariance regularisation of two views."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cropssl.heads import ProjectionHead
from cropssl.losses import VICRegLoss
from cropssl.methods.base import SSLMethod
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class VICReg(SSLMethod):
    """VICReg on pixel time series.

    Args:
        encoder: The encoder being pre-trained.
        views: Two-view generator (``configs/augment/``).
        proj_hidden: Expander hidden width.
        proj_dim: Expander output width.
        sim_weight: Invariance weight (lambda).
        var_weight: Variance weight (mu).
        cov_weight: Covariance weight (nu).
        gather_distributed: Compute variance/covariance over the global batch.
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "vicreg"
    min_views = 2

    def __init__(
        self,
        encoder: nn.Module,
        views: ViewGenerator | None = None,
        proj_hidden: int = 1024,
        proj_dim: int = 1024,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gather_distributed: bool = True,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.projector = ProjectionHead(encoder.embed_dim, proj_hidden, proj_dim, num_layers=3)
        self.loss_fn = VICRegLoss(
            sim=sim_weight, var=var_weight, cov=cov_weight, gather_distributed=gather_distributed
        )

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Two views -> encoder -> expander -> VICReg loss."""
        h0, h1 = self.encode_views(self.make_views(batch)[:2])
        return self.loss_fn(self.projector(h0), self.projector(h1)), {}
