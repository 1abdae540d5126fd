"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of two views' projections the identity."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cropssl.heads import ProjectionHead
from cropssl.losses import BarlowTwinsLoss
from cropssl.methods.base import SSLMethod
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class BarlowTwins(SSLMethod):
    """Barlow Twins on pixel time series.

    Args:
        encoder: The encoder being pre-trained.
        views: Two-view generator (``configs/augment/``).
        proj_hidden: Projector hidden width.
        proj_dim: Projector output width (the paper uses a wide projector; 1024 suits a d=128 encoder).
        lambda_: Weight of the off-diagonal (redundancy) term.
        gather_distributed: Compute the correlation over the global batch.
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "barlow"
    min_views = 2

    def __init__(
        self,
        encoder: nn.Module,
        views: ViewGenerator | None = None,
        proj_hidden: int = 1024,
        proj_dim: int = 1024,
        lambda_: float = 5e-3,
        gather_distributed: bool = True,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.projector = ProjectionHead(encoder.embed_dim, proj_hidden, proj_dim, num_layers=3)
        self.loss_fn = BarlowTwinsLoss(lambda_=lambda_, gather_distributed=gather_distributed)

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Two views -> encoder -> projector -> Barlow Twins loss."""
        h0, h1 = self.encode_views(self.make_views(batch)[:2])
        return self.loss_fn(self.projector(h0), self.projector(h1)), {}
