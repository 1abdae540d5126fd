"""Heads on top of the encoder: the masked-modelling decoder (projection / prediction heads live here too).

Heads are plain ``nn.Module``s with no Lightning inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from cropssl.schema import BAND_GROUPS, NUM_BANDS


def sincos_table(n: int, dim: int) -> Tensor:
    """Fixed sinusoidal table ``[n, dim]`` (Transformer position encoding)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table


def attn_mask_from_padding(pad: Tensor) -> Tensor:
    """Key-padding mask ``[B, N]`` (True = ignore) -> SDPA boolean mask ``[B, 1, 1, N]`` (True = attend)."""
    return ~pad[:, None, None, :]


class MaskedDecoder(nn.Module):
    """Presto-style decoder: reconstructs the band values of hidden dynamic tokens.

    Encoder outputs are projected to the decoder width; hidden tokens are replaced by a learned mask
    token; every token gets a learned type embedding (its channel group, or latlon / SRTM / Dynamic
    World), a fixed time embedding and a learned month embedding; transformer blocks follow; one linear
    head per dynamic channel group predicts that group's normalised band values.

    Args:
        enc_dim: Encoder width.
        groups: Dynamic channel groups reconstructed, in the encoder's token-grid order.
        num_types: Number of token types in the encoder layout.
        dim: Decoder width.
        depth: Decoder blocks.
        heads: Attention heads.
        mlp_ratio: MLP expansion.
        max_T: Longest supported sequence.

    """

    def __init__(
        self,
        enc_dim: int,
        groups: Sequence[str],
        num_types: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        max_T: int = 72,
    ) -> None:
        super().__init__()
        self.groups = tuple(groups)
        self.proj = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.type_embed = nn.Embedding(num_types, dim)
        self.month_embed = nn.Embedding(13, dim)  # 12 = static token (no month)
        self.register_buffer("time_embed", sincos_table(max_T + 1, dim), persistent=False)
        self.blocks = nn.ModuleList(
            [Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList([nn.Linear(dim, len(BAND_GROUPS[g])) for g in self.groups])
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self,
        tokens: Tensor,
        pad: Tensor,
        hide: Tensor,
        type_ids: Tensor,
        times: Tensor,
        month: Tensor,
        grid_index: Tensor,
    ) -> Tensor:
        """Reconstruct the hidden dynamic tokens.

        Args:
            tokens: Encoder output ``[B, N, enc_dim]``.
            pad: ``[B, N]`` True where the token is missing in the data.
            hide: ``[B, N]`` True where the masking strategy hid the token.
            type_ids: ``[N]`` token type of each position.
            times: ``[N]`` timestep of each position (-1 for static tokens).
            month: ``[B, T]`` month of each timestep.
            grid_index: ``[T * G]`` token positions of the dynamic (t, g) grid, t-major.

        Returns:
            Predicted normalised values ``[B, T, 17]`` (bands outside the dynamic groups are 0).

        """
        B, N, _ = tokens.shape
        T = month.shape[1]
        x = self.proj(tokens)
        x = torch.where(hide[..., None], self.mask_token.to(x.dtype), x)
        t_idx = times.clamp(min=-1) + 1  # static -> 0
        tok_month = torch.where(
            times[None, :] >= 0, month.gather(1, times.clamp(min=0)[None, :].expand(B, N)), 12
        )
        x = x + self.type_embed(type_ids)[None] + self.time_embed[t_idx][None] + self.month_embed(tok_month)
        attn_mask = attn_mask_from_padding(pad)
        for blk in self.blocks:
            x = blk(x, attn_mask=attn_mask)
        x = self.norm(x)
        G = len(self.groups)
        grid = x[:, grid_index].reshape(B, T, G, -1)
        out = x.new_zeros(B, T, NUM_BANDS)
        for g, (name, head) in enumerate(zip(self.groups, self.heads, strict=True)):
            out[..., list(BAND_GROUPS[name])] = head(grid[:, :, g])
        return out
