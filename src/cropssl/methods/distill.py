"""Distillation for deployment: a small student encoder learns to reproduce a frozen teacher's embeddings.

The teacher is Presto's published weights (``teacher=presto``) or any exported encoder (an export directory);
it is frozen, runs in eval mode and is not trained. The student (``encoder=`` of the run, e.g.
``encoder=small``) sees the same unlabelled pixels, optionally through the view generator, and a linear head
maps its embedding to the teacher's width; the loss is :class:`~cropssl.losses.distill.EmbeddingDistillLoss`.
An export of the run holds the student only: the cheap encoder that replaces the teacher on CPUs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cropssl.losses.distill import EmbeddingDistillLoss
from cropssl.methods.base import SSLMethod
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


def load_teacher(spec: str) -> nn.Module:
    """The frozen teacher encoder: ``presto`` (published weights) or an export directory."""
    if spec == "presto":
        from cropssl.artifacts import presto_path
        from cropssl.encoder import PixelTimeSeriesEncoder

        teacher = PixelTimeSeriesEncoder.from_presto(presto_path())
    else:
        from cropssl.export_dir import load_encoder

        teacher = load_encoder(spec)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Distill(SSLMethod):
    """Embedding distillation from a frozen teacher into the run's (smaller) encoder.

    Args:
        encoder: The student encoder.
        teacher: ``presto`` or an export directory of the teacher encoder.
        views: Optional view generator (the student sees its first view, the teacher the clean pixel).
        cosine_weight: Weight of the cosine term of the loss.
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "distill"

    def __init__(
        self,
        encoder: nn.Module,
        teacher: str = "presto",
        views: ViewGenerator | None = None,
        cosine_weight: float = 1.0,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.teacher_spec = str(teacher)
        self.teacher = load_teacher(self.teacher_spec)
        self.head = nn.Linear(encoder.embed_dim, self.teacher.embed_dim)
        self.loss_fn = EmbeddingDistillLoss(cosine_weight)

    def train(self, mode: bool = True) -> Distill:
        """Train the student and head; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher embedding of the pixel, student prediction of it (from a view when views are set)."""
        with torch.no_grad():
            target = self.teacher(batch)
        inp = self.make_views(batch)[0] if self.views is not None else batch
        pred = self.head(self.encoder(inp))
        loss = self.loss_fn(pred, target)
        cos = torch.nn.functional.cosine_similarity(pred.detach(), target, dim=-1).mean()
        return loss, {"cosine": cos}
