"""Embedding distillation loss (a student reproduces a frozen teacher's embeddings)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.losses.checks import in_fp32


class EmbeddingDistillLoss(nn.Module):
    """``mse(s, t) + cosine_weight * mean(1 - cos(s, t))`` between student and teacher embeddings.

    The MSE matches the embeddings themselves (what a probe fitted on the teacher would read); the cosine
    term keeps their directions aligned where the scale is small.

    Args:
        cosine_weight: Weight of the cosine term.

    """

    def __init__(self, cosine_weight: float = 1.0) -> None:
        super().__init__()
        self.cosine_weight = float(cosine_weight)

    @in_fp32
    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Loss of ``[B, D]`` student predictions against ``[B, D]`` teacher embeddings."""
        if student.shape != teacher.shape:
            raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
        cos = F.cosine_similarity(student, teacher, dim=-1)
        return F.mse_loss(student, teacher) + self.cosine_weight * (1 - cos).mean()
