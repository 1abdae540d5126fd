"""Heads on top of the encoder: the masked-modelling decoder (projection / prediction heads live here too).

Heads are plain ``nn.Module``s with no Lightning inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cropssl.layers import Block, sinusoid_encoding_table
from cropssl.schema import BAND_GROUPS, NUM_BANDS


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
        self.register_buffer("time_embed", sinusoid_encoding_table(max_T + 1, dim), persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList([nn.Linear(dim, len(BAND_GROUPS[g])) for g in self.groups])
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self,
        encoded: Tensor,
        index: Tensor,
        filler: Tensor,
        pad: Tensor,
        type_ids: Tensor,
        times: Tensor,
        month: Tensor,
        grid_index: Tensor,
    ) -> Tensor:
        """Reconstruct the hidden dynamic tokens from the encoded visible ones.

        Every position of the full layout that is not a visible token gets the mask token; the decoder then
        attends over the tokens present in the data only (missing ones are left out, see
        :func:`~cropssl.encoder.compact_tokens`), as the all-token decoder with a key-padding mask would.

        Args:
            encoded: Encoder output of the visible tokens ``[B, n, enc_dim]``.
            index: ``[B, n]`` their positions in the full layout of ``N`` tokens.
            filler: ``[B, n]`` True where an entry of ``index`` is filler (not a visible token).
            pad: ``[B, N]`` True where the token is missing in the data.
            type_ids: ``[N]`` token type of each position.
            times: ``[N]`` timestep of each position (-1 for static tokens).
            month: ``[B, T]`` month of each timestep.
            grid_index: ``[T * G]`` token positions of the dynamic (t, g) grid, t-major.

        Returns:
            Predicted normalised values ``[B, T, 17]`` (bands outside the dynamic groups are 0).

        """
        from cropssl.layers import compact_tokens, gather_tokens

        B, N = pad.shape
        T = month.shape[1]
        mask_token = self.mask_token.to(encoded.dtype)
        vis = torch.where(filler[..., None], mask_token, self.proj(encoded))
        x = mask_token.expand(B, N, -1).scatter(1, index[..., None].expand(-1, -1, vis.shape[-1]), vis)
        t_idx = times.clamp(min=-1) + 1  # static -> 0
        tok_month = torch.where(
            times[None, :] >= 0, month.gather(1, times.clamp(min=0)[None, :].expand(B, N)), 12
        )
        x = x + self.type_embed(type_ids)[None] + self.time_embed[t_idx][None] + self.month_embed(tok_month)
        keep, keep_pad = compact_tokens(pad)
        h = gather_tokens(x, keep)
        attn_mask = attn_mask_from_padding(keep_pad) if bool(keep_pad.any()) else None
        for blk in self.blocks:
            h = blk(h, attn_mask=attn_mask)
        h = self.norm(h)
        x = torch.zeros_like(x).scatter(1, keep[..., None].expand(-1, -1, h.shape[-1]), h)
        G = len(self.groups)
        grid = x[:, grid_index].reshape(B, T, G, -1)
        out = x.new_zeros(B, T, NUM_BANDS)
        for g, (name, head) in enumerate(zip(self.groups, self.heads, strict=True)):
            # under autocast the linear heads return bfloat16 / float16: the reconstruction keeps x's dtype
            out[..., list(BAND_GROUPS[name])] = head(grid[:, :, g]).to(out.dtype)
        return out


class ProjectionHead(nn.Module):
    """MLP projector: ``num_layers - 1`` Linear-BatchNorm-ReLU blocks, then a final Linear.

    SimCLR / BYOL / Barlow Twins / VICReg projector; with ``last_bn`` an affine-free ``BatchNorm1d``
    follows the last Linear (MoCo v3). Hidden Linears have no bias (a BatchNorm follows); the last one
    has a bias unless ``last_bn``. BatchNorm needs more than one sample per batch in training mode, so a
    batch of size 1 raises in ``train()``.

    Args:
        in_dim: Input width.
        hidden_dim: Hidden width.
        out_dim: Output width.
        num_layers: Number of Linear layers (>= 1).
        last_bn: Append ``BatchNorm1d(out_dim, affine=False)``.

    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(d, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Project ``[B, in_dim]`` -> ``[B, out_dim]``."""
        return self.layers(x)


class PredictionHead(nn.Module):
    """BYOL / MoCo v3 predictor: Linear-BatchNorm-ReLU-Linear.

    BatchNorm needs more than one sample per batch in training mode.

    Args:
        in_dim: Input width.
        hidden_dim: Hidden width.
        out_dim: Output width.

    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Predict ``[B, in_dim]`` -> ``[B, out_dim]``."""
        return self.layers(x)


class DINOHead(nn.Module):
    """DINO head (facebookresearch/dino ``DINOHead``).

    An MLP with GELU (``num_layers`` Linears) to a bottleneck, L2 normalisation, then a weight-normalised
    Linear without bias to ``out_dim`` prototypes. The weight norm uses
    ``torch.nn.utils.parametrizations.weight_norm`` (parameters ``last_layer.parametrizations.weight.
    original0`` = magnitude g ``[out_dim, 1]`` and ``original1`` = direction v); g starts at 1 and, with
    ``norm_last_layer``, is frozen (``requires_grad=False``), so every prototype has unit norm and the
    logits are cosine similarities. The module deep-copies (EMA teachers) and round-trips through
    ``state_dict``.

    Args:
        in_dim: Input width.
        out_dim: Number of prototypes.
        hidden_dim: MLP hidden width.
        bottleneck_dim: Bottleneck width.
        num_layers: Number of MLP Linears (>= 1).
        norm_last_layer: Freeze the weight-norm magnitude at 1.
        use_bn: BatchNorm after each hidden Linear (the reference's option for ResNet backbones).

    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        num_layers = max(num_layers, 1)
        if num_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:

            def block(i: int) -> list[nn.Module]:
                bn = [nn.BatchNorm1d(hidden_dim)] if use_bn else []
                return [nn.Linear(i, hidden_dim), *bn, nn.GELU()]

            layers: list[nn.Module] = block(in_dim)
            for _ in range(num_layers - 2):
                layers += block(hidden_dim)
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False)
        )
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        if norm_last_layer:
            g.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_dim]`` -> prototype logits ``[B, out_dim]``."""
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        return self.last_layer(x)
