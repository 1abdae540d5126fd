"""Momentum (EMA) teachers for MoCo v3, BYOL and DINO, on timm's ``ModelEmaV3``.

The teacher is an EMA copy of some student modules (encoder + heads). Its momentum is a function of the
global step (cosine from ``base`` to ``final``, BYOL's schedule), so a resumed run uses exactly the
momentum the uninterrupted run would have used. The teacher's weights are ordinary submodule
parameters, so they live in the method's ``state_dict`` and resume exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.utils.model_ema import ModelEmaV3
from torch import nn

from cropssl.schedules import cosine_to


class EMATeacher(nn.Module):
    """An EMA teacher of a dict of student modules.

    Args:
        student: The student modules the teacher follows, by name (e.g. ``encoder``, ``head``).
        base_momentum: Momentum at step 0.
        final_momentum: Momentum at the end of the schedule.

    """

    def __init__(
        self, student: Mapping[str, nn.Module], base_momentum: float = 0.996, final_momentum: float = 1.0
    ) -> None:
        super().__init__()
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(
                f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}"
            )
        self.base_momentum = float(base_momentum)
        self.final_momentum = float(final_momentum)
        self.ema = ModelEmaV3(nn.ModuleDict(dict(student)), decay=base_momentum)
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def momentum(self, step: int, total_steps: int) -> float:
        """Momentum at an optimiser step (cosine schedule to ``final_momentum``)."""
        return cosine_to(step, total_steps, self.base_momentum, self.final_momentum)

    @torch.no_grad()
    def update(self, student: Mapping[str, nn.Module], momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student`` for all weights and buffers."""
        self.ema.decay = float(momentum)
        self.ema.update(nn.ModuleDict(dict(student)))

    @torch.no_grad()
    def copy_from(self, student: Mapping[str, nn.Module]) -> None:
        """Make the teacher an exact copy of the student (start of training, ``reset_teacher``)."""
        self.ema.module.load_state_dict(nn.ModuleDict(dict(student)).state_dict())

    def __getitem__(self, name: str) -> nn.Module:
        return self.ema.module[name]


class TeacherMixin:
    """Teacher plumbing for a :class:`~cropssl.methods.base.SSLMethod` with an ``EMATeacher``.

    The method defines ``self.teacher`` and :meth:`student_modules`; the teacher is updated once per
    optimiser step (not per batch, so gradient accumulation is respected), after the step.
    """

    teacher: EMATeacher
    _teacher_step: int = -1

    def student_modules(self) -> dict[str, nn.Module]:
        """The student modules the teacher follows, by name (same names as the teacher's)."""
        raise NotImplementedError

    def reset_teacher(self) -> None:
        """Make the teacher a copy of the student (fresh start and ``start.reset_teacher``)."""
        self.teacher.copy_from(self.student_modules())

    def teacher_momentum(self) -> float:
        """Momentum at the current global step."""
        return self.teacher.momentum(self.global_step, self.total_steps())  # type: ignore[attr-defined]

    def on_train_start(self) -> None:
        """Remember the step the teacher was last updated at (restored runs start from their step)."""
        self._teacher_step = int(self.global_step)  # type: ignore[attr-defined]

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        """After an optimiser step: move the teacher towards the student."""
        step = int(self.global_step)  # type: ignore[attr-defined]
        if step != self._teacher_step:
            momentum = self.teacher_momentum()
            self.teacher.update(self.student_modules(), momentum)
            self._teacher_step = step
            self.log("train/teacher_momentum", momentum)  # type: ignore[attr-defined]
