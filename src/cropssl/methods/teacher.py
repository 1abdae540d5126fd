"""Momentum (EMA) teachers for MoCo v3, BYOL and DINO, on timm's ``ModelEmaV3``.

The teacher is an EMA copy of some student modules (encoder + heads). Its momentum is a function of the
global step (cosine from ``base`` to ``final``, BYOL's schedule), so a resumed run uses exactly the
momentum the uninterrupted run would have used. The teacher's weights are ordinary submodule
parameters, so they live in the method's ``state_dict`` and resume exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
        self.ema.module.train()  # timm puts the copy in eval mode; it runs as the student does
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

    The method defines ``self.teacher`` and :meth:`student_modules`. The teacher moves right after each
    optimiser step, inside :meth:`optimizer_step`: once per step (not per batch, so gradient accumulation
    is respected), and before any checkpoint of that step is written, so a resumed run restarts from
    exactly the teacher the uninterrupted run had. The momentum of step ``k`` (0-based) is
    ``teacher.momentum(k, total_steps)``.
    """

    teacher: EMATeacher
    _last_momentum: float | None = None

    def student_modules(self) -> dict[str, nn.Module]:
        """The student modules the teacher follows, by name (same names as the teacher's)."""
        raise NotImplementedError

    def reset_teacher(self) -> None:
        """Make the teacher a copy of the student (fresh start and ``start.reset_teacher``)."""
        self.teacher.copy_from(self.student_modules())

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        """Run the teacher in training mode too, as MoCo v3 and BYOL do.

        Its BatchNorms then use batch statistics; in eval mode, running statistics copied from an
        untrained student make every key alike and the contrastive loss stays at chance.
        """
        self.teacher.ema.module.train(self.training)  # type: ignore[attr-defined]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the teacher update with the momentum of that step."""
        step = int(self.global_step)  # type: ignore[attr-defined]  # steps completed before this one
        super().optimizer_step(*args, **kwargs)  # type: ignore[misc]
        momentum = self.teacher.momentum(step, self.total_steps())  # type: ignore[attr-defined]
        self.teacher.update(self.student_modules(), momentum)
        self._last_momentum = momentum

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        """Log the momentum of the last teacher update."""
        if self._last_momentum is not None:
            self.log("train/teacher_momentum", self._last_momentum)  # type: ignore[attr-defined]
