"""DINO's self-distillation loss with a centred, sharpened teacher (Caron et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.losses import dist
from cropssl.losses.checks import in_fp32


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student, as facebookresearch/dino.

    For every teacher view ``iq`` and student view ``v != iq`` (teacher view ``i`` is student view ``i``,
    the global views coming first), ``H(P_t(iq), P_s(v)) = -sum_k P_t[k] log P_s[k]`` averaged over the
    batch; the loss is the mean over those pairs. ``P_t = softmax((t - center) / T_t)`` (detached),
    ``P_s = softmax(s / T_s)``. After the loss, in training mode, the center is updated with the mean
    teacher output of the global batch: ``center = m * center + (1 - m) * mean(t)``.

    The teacher temperature follows ``np.linspace(warmup_teacher_temp, teacher_temp, W)[step]`` for
    ``step < W = warmup_teacher_temp_steps`` (the reference schedule, per step instead of per epoch),
    then stays at ``teacher_temp``.

    Args:
        out_dim: Output dimension of the DINO head (prototype count).
        teacher_temp: Teacher temperature after warm-up.
        student_temp: Student temperature.
        center_momentum: Momentum ``m`` of the center.
        warmup_teacher_temp: Teacher temperature at step 0.
        warmup_teacher_temp_steps: Warm-up length in steps (0 = no warm-up).
        gather_distributed: Average the center update over all processes (``all_reduce``).

    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if min(teacher_temp, student_temp, warmup_teacher_temp) <= 0:
            raise ValueError("temperatures must be > 0")
        if warmup_teacher_temp_steps < 0:
            raise ValueError(f"warmup_teacher_temp_steps must be >= 0, got {warmup_teacher_temp_steps}")
        self.out_dim = int(out_dim)
        self.teacher_temp = float(teacher_temp)
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_teacher_temp_steps = int(warmup_teacher_temp_steps)
        self.gather_distributed = gather_distributed
        self.register_buffer("center", torch.zeros(1, out_dim), persistent=True)

    def teacher_temperature(self, step: int) -> float:
        """Teacher temperature at an optimiser step."""
        w = self.warmup_teacher_temp_steps
        if step >= w:
            return self.teacher_temp
        if w == 1:
            return self.warmup_teacher_temp
        frac = max(step, 0) / (w - 1)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    @in_fp32
    def forward(
        self, student_outputs: Sequence[Tensor], teacher_outputs: Sequence[Tensor], step: int = 0
    ) -> Tensor:
        """Compute the loss (and update the center in training mode).

        Args:
            student_outputs: Head outputs of all views ``[B, out_dim]`` each, global views first.
            teacher_outputs: Teacher head outputs of the global views ``[B, out_dim]`` each.
            step: Global optimiser step (for the teacher-temperature warm-up).

        Returns:
            Scalar loss.

        """
        self._check(student_outputs, teacher_outputs)
        temp = self.teacher_temperature(step)
        center = self.center.to(teacher_outputs[0].dtype)
        teacher_probs = [F.softmax((t.detach() - center) / temp, dim=-1) for t in teacher_outputs]
        student_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_outputs]
        total = student_outputs[0].new_zeros(())
        n_terms = 0
        for iq, q in enumerate(teacher_probs):
            for v, logp in enumerate(student_logp):
                if v == iq:
                    continue
                total = total + torch.sum(-q * logp, dim=-1).mean()
                n_terms += 1
        if self.training:
            self.update_center(teacher_outputs)
        return total / n_terms

    @torch.no_grad()
    def update_center(self, teacher_outputs: Sequence[Tensor]) -> None:
        """``center = m * center + (1 - m) * mean`` of the teacher outputs over the global batch."""
        t = torch.cat([o.detach() for o in teacher_outputs], dim=0).to(self.center.dtype)
        total = t.sum(dim=0, keepdim=True)
        count = torch.tensor(float(t.shape[0]), device=t.device, dtype=t.dtype)
        if self.gather_distributed and dist.world_size() > 1:
            torch_dist.all_reduce(total)
            torch_dist.all_reduce(count)
        batch_center = total / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))

    def _check(self, student_outputs: Sequence[Tensor], teacher_outputs: Sequence[Tensor]) -> None:
        if len(student_outputs) < 2:
            raise ValueError(f"DINOLoss needs at least 2 student views, got {len(student_outputs)}")
        if len(teacher_outputs) < 1:
            raise ValueError("DINOLoss needs at least 1 teacher view, got 0")
        if len(teacher_outputs) > len(student_outputs):
            raise ValueError(
                f"more teacher views ({len(teacher_outputs)}) than student views ({len(student_outputs)}); "
                "teacher views must be the first student views"
            )
        ref = tuple(student_outputs[0].shape)
        for name, outs in (("student", student_outputs), ("teacher", teacher_outputs)):
            for i, o in enumerate(outs):
                if o.ndim != 2 or o.shape[-1] != self.out_dim:
                    raise ValueError(
                        f"{name} output {i} must be [B, out_dim={self.out_dim}], got {tuple(o.shape)}"
                    )
                if tuple(o.shape) != ref:
                    raise ValueError(
                        f"{name} output {i} has shape {tuple(o.shape)}, expected {ref} "
                        "(all views must share the batch)"
                    )
