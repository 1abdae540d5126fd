"""The published Presto weights (``default_model.pt``): reading them, their architecture, loading them.

:meth:`cropssl.encoder.PixelTimeSeriesEncoder.from_presto` builds an encoder from them. Like the encoder,
this module imports only torch and the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cropssl.schema import GROUP_NAMES

#: Presto's channel-embedding row of each group in the published weights (Dynamic World is the last row).
PRESTO_GROUP_ORDER: tuple[str, ...] = GROUP_NAMES
PRESTO_DW_ROW = len(PRESTO_GROUP_ORDER)


def read_presto(path: str | Path) -> dict[str, Tensor]:
    """The state dict in Presto's ``default_model.pt`` (also when wrapped as ``{"state_dict": ...}``)."""
    sd = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    return dict(sd)


def strip_encoder_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return the encoder keys without their ``encoder.`` prefix (unprefixed state dicts: as is)."""
    if any(k.startswith("encoder.") for k in sd):
        return {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    return {k: v for k, v in sd.items() if not k.startswith("decoder.")}


def presto_architecture(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    """Encoder arguments read from an (encoder-prefix-stripped) state dict; ``heads`` is Presto's 8."""
    kwargs: dict[str, Any] = {"heads": 8}
    if "norm.weight" in sd:
        d = int(sd["norm.weight"].shape[0])
        kwargs["d"] = d
        kwargs["depth"] = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        if "blocks.0.mlp.fc1.weight" in sd:
            kwargs["mlp_ratio"] = sd["blocks.0.mlp.fc1.weight"].shape[0] / d
        if "channel_embed.weight" in sd:
            kwargs["channel_embed_ratio"] = sd["channel_embed.weight"].shape[1] / d
        if "month_embed.weight" in sd:
            kwargs["month_embed_ratio"] = sd["month_embed.weight"].shape[1] / d
    return kwargs


def _check_fixed_table(name: str, value: Tensor, model: Any) -> None:
    """Presto's position / month tables are not learnt: they must equal the model's own."""
    if name == "pos_embed":
        table = value.reshape(-1, value.shape[-1])
        n = min(table.shape[0], model.max_T)
        if table.shape[-1] != model.pos_dim or not torch.allclose(
            table[:n].float(), model.pos_embed[:n].cpu(), atol=1e-6
        ):
            raise ValueError("Presto's pos_embed does not match this model's position table")
    elif value.shape != model.month_embed.shape or not torch.allclose(
        value.float(), model.month_embed.cpu(), atol=1e-6
    ):
        raise ValueError("Presto's month_embed does not match this model's month table")


def load_presto_state_dict(model: Any, sd: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Copy Presto encoder weights into ``model`` (a :class:`~cropssl.encoder.PixelTimeSeriesEncoder`).

    Keys may carry the ``encoder.`` prefix (full Presto state dict; ``decoder.*`` keys are ignored).
    Channel-embedding rows are remapped by group name, so a model with a subset of ``groups`` loads
    the matching rows. The fixed tables (``pos_embed``, ``month_embed``) are not copied but checked
    against the model's tables.

    Args:
        model: The encoder to fill.
        sd: Presto state dict.

    Returns:
        Report with ``loaded`` (Presto keys used), ``missing`` (parameters of the model not found),
        ``unexpected`` (Presto encoder keys the model has no place for) and ``ignored`` (decoder keys).

    Raises:
        ValueError: On a shape mismatch or if the fixed tables differ from Presto's.

    """
    ignored = sorted(k for k in sd if k.startswith("decoder."))
    loaded: list[str] = []
    unexpected: list[str] = []
    own = dict(model.named_parameters())
    filled: set[str] = set()

    def copy(dst_name: str, value: Tensor, src_name: str) -> None:
        dst = own[dst_name]
        if dst.shape != value.shape:
            raise ValueError(
                f"shape mismatch for {src_name}: Presto has {tuple(value.shape)}, "
                f"this model expects {tuple(dst.shape)} ({dst_name})"
            )
        with torch.no_grad():
            dst.copy_(value.to(dst.dtype))
        filled.add(dst_name)
        loaded.append(src_name)

    for name, value in strip_encoder_prefix(sd).items():
        if name in ("pos_embed", "month_embed.weight"):
            _check_fixed_table(name, value, model)
            loaded.append(name)
        elif name == "channel_embed.weight":
            if value.shape[0] != PRESTO_DW_ROW + 1:
                raise ValueError(
                    f"channel_embed has {value.shape[0]} rows, expected {PRESTO_DW_ROW + 1} "
                    f"({list(PRESTO_GROUP_ORDER)} + dynamic_world)"
                )
            rows = [PRESTO_GROUP_ORDER.index(g) for g in model.groups] + [PRESTO_DW_ROW]
            copy("channel_embed.weight", value[rows], name)
        elif name in own:
            copy(name, value, name)
        else:
            unexpected.append(name)
    missing = sorted(set(own) - filled)
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected, "ignored": ignored}
