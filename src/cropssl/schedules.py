"""Learning-rate, momentum and temperature schedules as pure functions of the global step.

Because every value is computed from the step (never accumulated), a resumed run continues exactly
where it stopped, and a run can be extended or branched by changing ``total_steps``.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.0) -> float:
    """Multiplier in [final_ratio, 1]: linear warmup from 0, then cosine decay to ``final_ratio``.

    Args:
        step: Global optimiser step (0-based).
        total_steps: Length of the schedule; later steps stay at ``final_ratio``.
        warmup_steps: Linear warmup length.
        final_ratio: Multiplier at the end of the schedule.

    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_stable_decay(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    decay_fraction: float = 0.2,
    final_ratio: float = 0.0,
) -> float:
    """Warmup-stable-decay (WSD): warmup, constant 1, then linear decay over the last ``decay_fraction``.

    A WSD run can be branched at any point of its stable phase and decayed, or extended, without
    re-warming, which is why continual pre-training favours it.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, round(decay_fraction * total_steps))
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / decay_steps)
    return 1.0 - (1.0 - final_ratio) * progress


def constant(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Constant multiplier after an optional linear warmup."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


def cosine_to(step: int, total_steps: int, base: float, final: float) -> float:
    """Cosine ramp from ``base`` at step 0 to ``final`` at ``total_steps`` (EMA momentum, temperatures)."""
    progress = min(1.0, max(0.0, step / max(1, total_steps)))
    return final - (final - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_to(step: int, total_steps: int, base: float, final: float) -> float:
    """Linear ramp from ``base`` to ``final`` over ``total_steps`` steps, then constant."""
    progress = min(1.0, max(0.0, step / max(1, total_steps)))
    return base + (final - base) * progress


LR_SCHEDULES = {"cosine": warmup_cosine, "wsd": warmup_stable_decay, "constant": constant}
