"""SimCLR (Chen et al. 2020): two views, a projection head, NT-Xent with the other samples as negatives."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cropssl.heads import ProjectionHead
from cropssl.losses import NTXentLoss
from cropssl.methods.base import SSLMethod
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class SimCLR(SSLMethod):
    """SimCLR on pixel time series.

    Args:
        encoder: The encoder being pre-trained.
        views: Two-view generator (``configs/augment/``).
        proj_hidden: Projection head hidden width.
        proj_dim: Projection output width.
        temperature: NT-Xent temperature.
        gather_distributed: Use the negatives of all processes (global batch).
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "simclr"
    min_views = 2

    def __init__(
        self,
        encoder: nn.Module,
        views: ViewGenerator | None = None,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.projector = ProjectionHead(encoder.embed_dim, proj_hidden, proj_dim, num_layers=2)
        self.loss_fn = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Two views -> encoder -> projector -> NT-Xent."""
        h0, h1 = self.encode_views(self.make_views(batch)[:2])
        return self.loss_fn(self.projector(h0), self.projector(h1)), {}
