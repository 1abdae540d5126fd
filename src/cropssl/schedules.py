"""Learning-rate, momentum and temperature schedules over steps, and learning rates over layers.

Because every value is computed from the step (never accumulated), a resumed run continues exactly
where it stopped, and a run can be extended or branched by changing ``total_steps``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn


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


# ---------------------------------------------------------------------------------------------- over layers
#: Encoder parameters of the input embeddings (layer 0 of the layer-wise decay).
EMBEDDING_PREFIXES: tuple[str, ...] = ("eo_patch_embed", "dw_embed", "latlon_embed", "channel_embed")


def layer_id(name: str, depth: int) -> int:
    """Depth of a parameter of a model with an ``encoder`` (fine-tuning, SSL methods) for layer-wise lr decay.

    Args:
        name: Parameter name (``encoder.blocks.1.attn.qkv.weight``, ``head.weight``, ...).
        depth: Number of transformer blocks of the encoder.

    Returns:
        0 for the input embeddings, ``i + 1`` for ``blocks.i``, ``depth + 1`` for the final norm, the
        head and anything else.

    """
    local = name.removeprefix("encoder.")
    if local.startswith(EMBEDDING_PREFIXES):
        return 0
    if local.startswith("blocks."):
        return int(local.split(".")[1]) + 1
    return depth + 1


def _no_weight_decay(name: str, p: Tensor) -> bool:
    local = name.removeprefix("encoder.")
    return p.ndim <= 1 or local.startswith(("channel_embed", "dw_embed"))


def param_groups(
    model: nn.Module, lr: float, layer_decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay and no weight decay on biases / norms / tables.

    Args:
        model: The model (only parameters with ``requires_grad`` are included).
        lr: Learning rate of the top layer (head and final norm).
        layer_decay: Factor per layer towards the input: layer ``l`` gets ``lr * decay^(depth + 1 - l)``.
        weight_decay: Weight decay of the decayed parameters.

    Returns:
        One group per (layer, decay / no decay) with keys ``params``, ``lr``, ``weight_decay`` and the
        bookkeeping keys ``name``, ``layer``, ``lr_scale`` and ``param_names``.

    """
    depth = model.encoder.depth
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        no_wd = _no_weight_decay(name, p)
        key = (layer, no_wd)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer)
            groups[key] = {
                "name": f"layer{layer}_{'no_decay' if no_wd else 'decay'}",
                "layer": layer,
                "lr_scale": scale,
                "lr": lr * scale,
                "weight_decay": 0.0 if no_wd else weight_decay,
                "params": [],
                "param_names": [],
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]
