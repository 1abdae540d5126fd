"""MoCo v3 (Chen, Xie & He 2021): contrast the online predictions with a momentum encoder's keys."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cropssl.heads import PredictionHead, ProjectionHead
from cropssl.losses import MoCoV3Loss
from cropssl.methods.base import SSLMethod, encode_views
from cropssl.methods.teacher import EMATeacher, TeacherMixin
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class MoCoV3(TeacherMixin, SSLMethod):
    """MoCo v3 on pixel time series (no queue: the keys of the global batch are the negatives).

    Args:
        encoder: The encoder being pre-trained.
        views: Two-view generator (``configs/augment/``).
        proj_hidden: Projector / predictor hidden width.
        proj_dim: Output width.
        temperature: Contrastive temperature.
        base_momentum: Momentum-encoder momentum at step 0 (cosine to 1.0).
        gather_distributed: Use the keys of all processes.
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "mocov3"
    min_views = 2

    def __init__(
        self,
        encoder: nn.Module,
        views: ViewGenerator | None = None,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.2,
        base_momentum: float = 0.99,
        gather_distributed: bool = True,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.projector = ProjectionHead(encoder.embed_dim, proj_hidden, proj_dim, num_layers=3, last_bn=True)
        self.predictor = PredictionHead(proj_dim, proj_hidden, proj_dim)
        self.teacher = EMATeacher(self.student_modules(), base_momentum=base_momentum)
        self.loss_fn = MoCoV3Loss(temperature=temperature, gather_distributed=gather_distributed)

    def student_modules(self) -> dict[str, nn.Module]:
        """The encoder and projector, which the momentum encoder follows."""
        return {"encoder": self.encoder, "projector": self.projector}

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Symmetric contrastive loss between queries of one view and keys of the other."""
        views = self.make_views(batch)[:2]
        q0, q1 = (self.predictor(self.projector(h)) for h in self.encode_views(views))
        with torch.no_grad():
            k0, k1 = (self.teacher["projector"](h) for h in encode_views(self.teacher["encoder"], views))
        return self.loss_fn(q0, k1) + self.loss_fn(q1, k0), {}
