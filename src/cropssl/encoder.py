"""The pixel-timeseries transformer encoder, compatible with the published Presto weights.

The architecture follows Presto (Tseng et al. 2023, ``nasaharvest/presto``, ``presto/presto.py``):

* every channel group of :data:`cropssl.schema.BAND_GROUPS` becomes one token per timestep through its own
  ``Linear(len(group), d)`` (``eo_patch_embed.<group>``); the static ``SRTM`` group becomes a single
  token built from the first timestep;
* Dynamic World classes become one token per timestep (``nn.Embedding(10, d)``, class 9 = missing);
* lat/lon becomes one token: ``Linear(3, d)`` on the cartesian ``(x, y, z)`` of the point on the unit
  sphere;
* to every per-timestep token the concatenation ``[month (d/4) | channel (d/4) | position (d/2)]`` is
  added: a fixed sin/cos month table, a learned channel embedding (one row per group plus a last one for
  Dynamic World) and a fixed sinusoidal position table indexed by the timestep. The SRTM token only
  gets its channel embedding (month and position parts are zero); the lat/lon token gets nothing;
* ``depth`` pre-norm transformer blocks (timm layout, qkv bias, LayerNorm, GELU MLP);
* the embedding is the LayerNorm of the mean of the final tokens over the non-missing tokens.

A token ``(group g, timestep t)`` is missing if *any* band of ``g`` is missing at ``t`` (Presto takes the
max of the group's mask). Presto drops missing tokens by sorting each sample; here they stay in place
and are excluded with a key padding mask in attention and a masked mean, so a batch with different
masks per sample gives exactly the per-sample result, with static shapes (traceable, no per-sample
Python loops, no boolean gathers).

Token layout (see :meth:`PixelTimeSeriesEncoder.token_layout`), Presto's order::

    [latlon] + [group_0 x T] + ... + [SRTM x 1] + ... + [group_k x T] + [dynamic_world x T]

This module imports only torch (and the schema), so exported models load without extra dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.layers import (
    Attention,
    Block,
    DropPath,
    Mlp,
    cartesian,
    compact_tokens,
    drop_padding,
    gather_tokens,
    month_encoding_table,
    sinusoid_encoding_table,
    static_graph,
    training_pass_size,
)
from cropssl.presto_weights import (
    load_presto_state_dict,
    presto_architecture,
    read_presto,
    strip_encoder_prefix,
)
from cropssl.schema import BAND_GROUPS, DW_CLASSES, DW_MISSING, GROUP_NAMES, NUM_BANDS, STATIC_GROUPS, Batch

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "Mlp",
    "PixelTimeSeriesEncoder",
    "cartesian",
    "compact_tokens",
    "gather_tokens",
    "month_encoding_table",
    "sinusoid_encoding_table",
]


def _group_slice(idx: Sequence[int]) -> slice | list[int]:
    """Return a slice for a contiguous band group (cheap view), else the index list."""
    idx = list(idx)
    if idx == list(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    return idx


class PixelTimeSeriesEncoder(nn.Module):
    """Presto-compatible pixel time series transformer.

    Args:
        d: Token / embedding size.
        depth: Number of transformer blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden size as a multiple of ``d``.
        max_T: Largest number of timesteps accepted (size of the position table; 72 covers dekadal data).
        groups: Channel groups used as tokens (names of :data:`cropssl.schema.BAND_GROUPS`); default all
            9. They are kept in the schema's order.
        use_dynamic_world: Add one Dynamic World token per timestep.
        use_latlon: Add the lat/lon token.
        channel_embed_ratio: Share of ``d`` used by the learned channel embedding.
        month_embed_ratio: Share of ``d`` used by the fixed month encoding; the rest is the position table.
        drop_path: Stochastic depth rate of the last block (linearly increasing from 0).

    Attributes:
        embed_dim: Output size ``d``.
        config: Constructor arguments (JSON-serialisable); ``PixelTimeSeriesEncoder(**enc.config)``
            rebuilds the architecture.
        inference_chunk: Pixels per pass through the blocks when gradients are off (outputs unchanged;
            see ``experiments/benchmarks/README_vs_presto.md``).

    """

    inference_chunk: int = 32

    def __init__(
        self,
        d: int = 128,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        max_T: int = 72,
        groups: Sequence[str] | None = None,
        use_dynamic_world: bool = True,
        use_latlon: bool = True,
        channel_embed_ratio: float = 0.25,
        month_embed_ratio: float = 0.25,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups is None:
            groups = GROUP_NAMES
        elif isinstance(groups, str):
            groups = [groups]
        unknown = [g for g in groups if g not in BAND_GROUPS]
        if unknown:
            raise ValueError(f"unknown channel groups {unknown}; expected names from {list(GROUP_NAMES)}")
        if not groups:
            raise ValueError("at least one channel group is required")
        self.groups: tuple[str, ...] = tuple(g for g in GROUP_NAMES if g in set(groups))
        if max_T < 1:
            raise ValueError(f"max_T must be >= 1, got {max_T}")

        self.d = int(d)
        self.embed_dim = self.d
        self.depth = int(depth)
        self.heads = int(heads)
        self.mlp_ratio = float(mlp_ratio)
        self.max_T = int(max_T)
        self.use_dynamic_world = bool(use_dynamic_world)
        self.use_latlon = bool(use_latlon)
        self.channel_embed_ratio = float(channel_embed_ratio)
        self.month_embed_ratio = float(month_embed_ratio)
        self.drop_path_rate = float(drop_path)

        # Presto's split of d: [month | channel | position]
        self.pos_dim = int(self.d * (1 - (self.channel_embed_ratio + self.month_embed_ratio)))
        self.channel_dim = int(self.d * self.channel_embed_ratio)
        self.month_dim = int(self.d * self.month_embed_ratio)
        if self.pos_dim + self.channel_dim + self.month_dim != self.d:
            raise ValueError(
                f"month ({self.month_dim}) + channel ({self.channel_dim}) + position ({self.pos_dim}) "
                f"embedding sizes must add up to d={self.d}; adjust the ratios"
            )

        self.eo_patch_embed = nn.ModuleDict({g: nn.Linear(len(BAND_GROUPS[g]), self.d) for g in self.groups})
        self.dw_embed = nn.Embedding(DW_CLASSES, self.d) if self.use_dynamic_world else None
        self.latlon_embed = nn.Linear(3, self.d) if self.use_latlon else None
        # one row per group, the last one for Dynamic World (kept even without DW, as in Presto)
        self.channel_embed = nn.Embedding(len(self.groups) + 1, self.channel_dim)
        dpr = [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        self.blocks = nn.ModuleList(
            [Block(self.d, self.heads, self.mlp_ratio, drop_path=dpr[i]) for i in range(self.depth)]
        )
        self.norm = nn.LayerNorm(self.d)

        # fixed tables: deterministic from the config, hence not part of the state dict
        self.register_buffer("pos_embed", sinusoid_encoding_table(self.max_T, self.pos_dim), persistent=False)
        self.register_buffer("month_embed", month_encoding_table(self.month_dim), persistent=False)

        self._slices = {g: _group_slice(BAND_GROUPS[g]) for g in self.groups}
        self._init_weights()

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the architecture (JSON-serialisable)."""
        return {
            "d": self.d,
            "depth": self.depth,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
            "max_T": self.max_T,
            "groups": list(self.groups),
            "use_dynamic_world": self.use_dynamic_world,
            "use_latlon": self.use_latlon,
            "channel_embed_ratio": self.channel_embed_ratio,
            "month_embed_ratio": self.month_embed_ratio,
            "drop_path": self.drop_path_rate,
        }

    @property
    def dynamic_groups(self) -> tuple[str, ...]:
        """Groups with one token per timestep, in token order (``groups`` without the static ones)."""
        return tuple(g for g in self.groups if g not in STATIC_GROUPS)

    @property
    def static_groups(self) -> tuple[str, ...]:
        """Groups with a single token (built from the first timestep), in token order."""
        return tuple(g for g in self.groups if g in STATIC_GROUPS)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ layout
    def num_tokens(self, T: int) -> int:
        """Return the number of tokens for ``T`` timesteps."""
        n_static = sum(g in STATIC_GROUPS for g in self.groups)
        n = n_static + (len(self.groups) - n_static) * T
        return n + int(self.use_latlon) + (T if self.use_dynamic_world else 0)

    def token_layout(self, T: int) -> list[tuple[str, int]]:
        """Describe what each token position holds, for ``T`` timesteps.

        Args:
            T: Number of timesteps.

        Returns:
            One ``(name, timestep)`` per token: ``name`` is a group of :data:`~cropssl.schema.BAND_GROUPS`,
            ``"latlon"`` or ``"dynamic_world"``; ``timestep`` is -1 for the lat/lon and static tokens.

        """
        layout: list[tuple[str, int]] = [("latlon", -1)] if self.use_latlon else []
        for g in self.groups:
            layout += [(g, -1)] if g in STATIC_GROUPS else [(g, t) for t in range(T)]
        if self.use_dynamic_world:
            layout += [("dynamic_world", t) for t in range(T)]
        return layout

    # ------------------------------------------------------------------ inputs
    def _unpack(
        self,
        batch: Batch | Tensor,
        mask: Tensor | None,
        month: Tensor | None,
        latlon: Tensor | None,
        dynamic_world: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        if isinstance(batch, Batch):
            b = batch
            x, mask, month, latlon, dynamic_world = b.x, b.mask, b.month, b.latlon, b.dynamic_world
        else:
            x = batch
        if mask is None:
            mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        if month is None:
            raise ValueError("month [B, T] is required")
        if self.use_latlon and latlon is None:
            raise ValueError("latlon [B, 2] is required (use_latlon=True)")
        if not (torch.jit.is_tracing() or torch.jit.is_scripting()):
            self._check_shapes(x, mask, month, latlon, dynamic_world)
        if mask.dtype != torch.bool:
            mask = mask > 0
        return x, mask, month, latlon, dynamic_world

    def _check_shapes(
        self, x: Tensor, mask: Tensor, month: Tensor, latlon: Tensor | None, dynamic_world: Tensor | None
    ) -> None:
        """Validate input shapes (skipped while tracing: shapes are then fixed by the example inputs)."""
        if x.ndim != 3 or x.shape[-1] != NUM_BANDS:
            raise ValueError(
                f"x must be [B, T, {NUM_BANDS}] (expected {NUM_BANDS} bands), got {tuple(x.shape)}"
            )
        bsz, t = x.shape[0], x.shape[1]
        if t > self.max_T:
            raise ValueError(f"got T={t} timesteps but this encoder supports at most max_T={self.max_T}")
        if tuple(mask.shape) != tuple(x.shape):
            raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
        if tuple(month.shape) != (bsz, t):
            raise ValueError(f"month must be [B, T] = {(bsz, t)}, got {tuple(month.shape)}")
        if self.use_latlon and latlon is not None and tuple(latlon.shape) != (bsz, 2):
            raise ValueError(f"latlon must be [B, 2] = {(bsz, 2)}, got {tuple(latlon.shape)}")
        if self.use_dynamic_world and dynamic_world is not None and tuple(dynamic_world.shape) != (bsz, t):
            raise ValueError(f"dynamic_world must be [B, T] = {(bsz, t)}, got {tuple(dynamic_world.shape)}")

    # ------------------------------------------------------------------ stages
    def embed_tokens(
        self,
        batch: Batch | Tensor,
        mask: Tensor | None = None,
        month: Tensor | None = None,
        latlon: Tensor | None = None,
        dynamic_world: Tensor | None = None,
        skip_absent_dynamic_world: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Input tokens (before the transformer) and their key padding mask.

        Args:
            batch: A :class:`~cropssl.schema.Batch`, or ``x`` ``[B, T, 17]`` with the other tensors.
            mask: ``[B, T, 17]`` bool, True = missing (default: nothing missing).
            month: ``[B, T]`` long, 0-11.
            latlon: ``[B, 2]`` degrees (required if ``use_latlon``); a NaN row leaves its lat/lon token out.
            dynamic_world: ``[B, T]`` long, 9 = missing (default: all missing).
            skip_absent_dynamic_world: Leave the Dynamic World tokens out when no pixel of the batch has
                any (the layout then ends before them; :meth:`forward` uses it, methods do not).

        Returns:
            ``tokens [B, N, d]`` laid out as :meth:`token_layout` and ``pad_mask [B, N]`` bool,
            True = missing token (to be ignored).

        """
        x, mask, month, latlon, dynamic_world = self._unpack(batch, mask, month, latlon, dynamic_world)
        bsz, t = x.shape[0], x.shape[1]
        # values under the mask never reach a kept token; zero them so NaN / inf fill values are harmless
        x = x.masked_fill(mask, 0.0)

        d, dm, dp = self.d, self.month_dim, self.pos_dim
        # [B, T, d] with the month in the first dm columns and the position in the last dp columns
        month_enc = F.embedding(torch.remainder(month.long(), 12), self.month_embed.to(x.dtype))
        time_enc = F.pad(month_enc, (0, d - dm)) + F.pad(self.pos_embed[:t].to(x.dtype), (d - dp, 0))
        channel = F.pad(self.channel_embed.weight.to(x.dtype), (dm, dp))  # [G + 1, d], middle columns

        tokens: list[Tensor] = []
        pads: list[Tensor] = []
        if self.latlon_embed is not None and latlon is not None:
            # a pixel without a location (NaN lat or lon) has its lat/lon token missing, like any group
            ll = latlon.to(x.dtype)
            absent = ~torch.isfinite(ll).all(dim=-1, keepdim=True)  # [B, 1]
            tokens.append(self.latlon_embed(cartesian(ll.masked_fill(absent, 0.0))).unsqueeze(1))
            pads.append(absent)
        for i, g in enumerate(self.groups):
            sl = self._slices[g]
            if g in STATIC_GROUPS:
                # one token from the first timestep, with only its channel embedding (Presto)
                tokens.append(self.eo_patch_embed[g](x[:, 0:1, sl]) + channel[i])
                pads.append(mask[:, 0:1, sl].any(-1))
            else:
                tokens.append(self.eo_patch_embed[g](x[:, :, sl]) + (channel[i] + time_enc))
                pads.append(mask[:, :, sl].any(-1))
        absent = dynamic_world is None or (not static_graph() and bool((dynamic_world == DW_MISSING).all()))
        if self.dw_embed is not None and not (skip_absent_dynamic_world and absent):
            if dynamic_world is None:
                dw = torch.full((bsz, t), DW_MISSING, dtype=torch.long, device=x.device)
            else:
                dw = dynamic_world.long()
            tokens.append(self.dw_embed(dw).to(x.dtype) + (channel[len(self.groups)] + time_enc))
            pads.append(dw == DW_MISSING)
        return torch.cat(tokens, dim=1), torch.cat(pads, dim=1)

    def encode(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Run the transformer blocks; padded tokens are never attended to.

        Args:
            tokens: ``[B, N, d]``.
            pad_mask: ``[B, N]`` bool, True = ignore this token as a key. A sample whose tokens are all
                padded attends to all of them (finite output) and pools to the norm's bias.

        Returns:
            ``[B, N, d]`` final tokens (no final norm). Outputs at padded positions are meaningless.

        """
        attn_mask = None
        if pad_mask is not None and (static_graph() or bool(pad_mask.any())):
            keep = ~pad_mask
            # never leave a row with no key at all (SDPA would return NaN); such samples are fully padded
            keep = keep | ~keep.any(dim=1, keepdim=True)
            attn_mask = keep[:, None, None, :]
        for blk in self.blocks:
            tokens = blk(tokens, attn_mask)
        return tokens

    def pool(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Mean over the non-padded tokens followed by the final LayerNorm.

        Args:
            tokens: ``[B, N, d]`` from :meth:`encode`.
            pad_mask: ``[B, N]`` bool, True = excluded from the mean.

        Returns:
            ``[B, d]`` embedding.

        """
        if pad_mask is None:
            return self.norm(tokens.mean(dim=1))
        keep = (~pad_mask).to(tokens.dtype).unsqueeze(-1)
        mean = (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return self.norm(mean)

    def tokens(
        self,
        batch: Batch | Tensor,
        mask: Tensor | None = None,
        month: Tensor | None = None,
        latlon: Tensor | None = None,
        dynamic_world: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Compute the final tokens (after all blocks, before pooling / norm) and the key padding mask.

        Args:
            batch: See :meth:`embed_tokens`.
            mask: See :meth:`embed_tokens`.
            month: See :meth:`embed_tokens`.
            latlon: See :meth:`embed_tokens`.
            dynamic_world: See :meth:`embed_tokens`.

        Returns:
            ``tokens [B, N, d]`` (layout :meth:`token_layout`) and ``pad_mask [B, N]`` (True = missing).

        """
        tok, pad = self.embed_tokens(batch, mask, month, latlon, dynamic_world)
        return self.encode(tok, pad), pad

    def forward(
        self,
        batch: Batch | Tensor,
        mask: Tensor | None = None,
        month: Tensor | None = None,
        latlon: Tensor | None = None,
        dynamic_world: Tensor | None = None,
    ) -> Tensor:
        """Embed a batch.

        Args:
            batch: A :class:`~cropssl.schema.Batch`, or ``x`` ``[B, T, 17]`` followed by the tensors
                below (the tensor form is what TorchScript / ONNX tracing uses).
            mask: See :meth:`embed_tokens`.
            month: See :meth:`embed_tokens`.
            latlon: See :meth:`embed_tokens`.
            dynamic_world: See :meth:`embed_tokens`.

        Returns:
            ``[B, d]`` embedding.

        """
        # without any Dynamic World input its tokens are not even built (all of them would be padding)
        tok, pad = self.embed_tokens(
            batch, mask, month, latlon, dynamic_world, skip_absent_dynamic_world=True
        )
        if static_graph():
            return self.pool(self.encode(tok, pad), pad)
        # inference runs the blocks on chunks of pixels whose activations stay in the CPU caches (2x the
        # px/s of one [256, 98, 512] MLP pass here); training keeps the whole batch in one pass unless its
        # samples' lengths differ enough to pay for several (below)
        step = len(tok) if torch.is_grad_enabled() else self.inference_chunk
        order = None
        if torch.is_grad_enabled() and bool(pad.any()):
            # training: samples with similar numbers of kept tokens share a pass, each pass cut to its own
            # longest sample, so views that hide much (DINO's local views beside its global ones) cost what
            # they hold, not what the fullest sample of the batch holds (a DINO step 1.8-2.2x faster; the
            # outputs do not depend on the company a sample keeps). Inference chunks of real pixels hold
            # similar lengths already (sorting them measured 0.96-1.03x on Presto's reference pixels).
            kept = (~pad).sum(dim=1)
            order = torch.argsort(kept, stable=True)
            tok, pad = tok[order], pad[order]
            step = training_pass_size(kept[order])
        out = [self._encode_pool(tok[i : i + step], pad[i : i + step]) for i in range(0, len(tok), step)]
        z = out[0] if len(out) == 1 else torch.cat(out)
        return z if order is None else z[torch.argsort(order)]

    def _encode_pool(self, tok: Tensor, pad: Tensor) -> Tensor:
        # leave the missing tokens out (the kept ones' outputs are the same): real data and views with
        # dropped timesteps / sensors / Dynamic World cost only what they hold
        tok, pad = drop_padding(tok, pad)
        return self.pool(self.encode(tok, pad), pad)

    def forward_tensors(
        self,
        x: Tensor,
        mask: Tensor,
        month: Tensor,
        latlon: Tensor,
        dynamic_world: Tensor | None = None,
    ) -> Tensor:
        """Tensor-only entry point (for tracing / export): same as ``forward(x, mask, month, ...)``."""
        return self.forward(x, mask, month, latlon, dynamic_world)

    # ------------------------------------------------------------------ Presto weights
    @classmethod
    def from_presto(cls, path: str | Path, max_T: int = 72, **overrides: Any) -> PixelTimeSeriesEncoder:
        """Build an encoder from the published Presto weights (``default_model.pt``).

        The architecture (``d``, ``depth``, ``mlp_ratio``, embedding ratios) is read from the weights;
        ``heads`` defaults to Presto's 8. The position table is regenerated for ``max_T`` (its first rows
        equal Presto's 24-row buffer, which is checked).

        Args:
            path: Presto checkpoint (state dict of encoder + decoder, keys ``encoder.*``), or an encoder-only
                state dict.
            max_T: Largest number of timesteps the encoder will accept.
            **overrides: Other constructor arguments (e.g. ``groups``, ``use_dynamic_world``, ``drop_path``).

        Returns:
            The encoder with Presto's weights loaded (in train mode, like any new module).

        Raises:
            ValueError: If the weights do not fit the requested architecture.

        """
        sd = strip_encoder_prefix(read_presto(path))
        model = cls(**{**presto_architecture(sd), "max_T": max_T, **overrides})
        report = model.load_presto_state_dict(sd)
        if report["missing"]:
            raise ValueError(f"Presto weights in {path} lack parameters: {report['missing']}")
        return model

    def load_presto_state_dict(self, sd: Mapping[str, Tensor]) -> dict[str, list[str]]:
        """Copy Presto encoder weights into this model (see :mod:`cropssl.presto_weights`)."""
        return load_presto_state_dict(self, sd)
