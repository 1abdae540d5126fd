"""DINO (Caron et al. 2021): self-distillation with a centred, sharpened momentum teacher and multi-crop.

On pixel time series a "crop" is a temporal window: global views are long windows, local views short
ones (``configs/augment/dino.yaml``). The teacher sees the global views, the student all of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cropssl.heads import DINOHead
from cropssl.losses import DINOLoss
from cropssl.methods.base import SSLMethod, encode_views
from cropssl.methods.teacher import EMATeacher, TeacherMixin
from cropssl.schema import Batch
from cropssl.views import ViewGenerator


class DINO(TeacherMixin, SSLMethod):
    """DINO on pixel time series.

    Args:
        encoder: The encoder being pre-trained (the student backbone).
        views: Multi-crop view generator (2 global + local views).
        out_dim: Prototype count of the DINO head (65536 in the paper; 1024 suits this small encoder).
        hidden_dim: Head hidden width.
        bottleneck_dim: Head bottleneck width.
        use_bn: BatchNorm in the head's MLP (keeps the batch spread of the head's input from shrinking).
        teacher_temp: Teacher temperature after warm-up.
        warmup_teacher_temp: Teacher temperature at step 0.
        warmup_teacher_temp_steps: Steps of linear teacher-temperature warm-up.
        student_temp: Student temperature.
        center_momentum: Momentum of the teacher-output center.
        base_momentum: Teacher momentum at step 0 (cosine to 1.0).
        gather_distributed: Average the teacher center over all processes (global batch).
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "dino"
    min_views = 2

    def __init__(
        self,
        encoder: nn.Module,
        views: ViewGenerator | None = None,
        out_dim: int = 1024,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        use_bn: bool = False,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        base_momentum: float = 0.996,
        gather_distributed: bool = True,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, views=views, anchor=anchor)
        self.head = DINOHead(
            encoder.embed_dim, out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, use_bn=use_bn
        )
        self.teacher = EMATeacher(self.student_modules(), base_momentum=base_momentum)
        self.loss_fn = DINOLoss(
            out_dim,
            teacher_temp=teacher_temp,
            student_temp=student_temp,
            center_momentum=center_momentum,
            warmup_teacher_temp=warmup_teacher_temp,
            warmup_teacher_temp_steps=warmup_teacher_temp_steps,
            gather_distributed=gather_distributed,
        )

    def student_modules(self) -> dict[str, nn.Module]:
        """The student encoder and head, which the teacher follows."""
        return {"encoder": self.encoder, "head": self.head}

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Student outputs of all views against the teacher's outputs of the global views."""
        views = self.make_views(batch)
        n_global = self.views.n_global if self.views is not None else 2
        student = [self.head(h) for h in self.encode_views(views)]
        with torch.no_grad():
            teacher = [
                self.teacher["head"](h) for h in encode_views(self.teacher["encoder"], views[:n_global])
            ]
        return self.loss_fn(student, teacher, step=self.global_step), {}
