"""BYOL (Grill et al. 2020): predict the momentum teacher's projection of the other view."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cropssl.heads import PredictionHead, ProjectionHead
from cropssl.losses import BYOLLoss
from cropssl.methods.base import SSLMethod, encode_views
from cropssl.methods.teacher import EMATeacher, TeacherMixin
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class BYOL(TeacherMixin, SSLMethod):
    """BYOL on pixel time series.

    Args:
        encoder: The encoder being pre-trained (the online network's backbone).
        views: Two-view generator (``configs/augment/``).
        proj_hidden: Projector / predictor hidden width.
        proj_dim: Projection width.
        base_momentum: Teacher momentum at step 0 (cosine to 1.0 at the end).
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "byol"
    min_views = 2

    def __init__(
        self,
        encoder: nn.Module,
        views: ViewGenerator | None = None,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        base_momentum: float = 0.99,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.projector = ProjectionHead(encoder.embed_dim, proj_hidden, proj_dim, num_layers=2)
        self.predictor = PredictionHead(proj_dim, proj_hidden, proj_dim)
        self.teacher = EMATeacher(self.student_modules(), base_momentum=base_momentum)
        self.loss_fn = BYOLLoss()

    def student_modules(self) -> dict[str, nn.Module]:
        """The online encoder and projector, which the teacher follows."""
        return {"encoder": self.encoder, "projector": self.projector}

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Online predictions of each view regress the teacher's projection of the other view."""
        views = self.make_views(batch)[:2]
        p0, p1 = (self.predictor(self.projector(h)) for h in self.encode_views(views))
        with torch.no_grad():
            z0, z1 = (self.teacher["projector"](h) for h in encode_views(self.teacher["encoder"], views))
        return self.loss_fn(p0, z1) + self.loss_fn(p1, z0), {}
