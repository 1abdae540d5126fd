"""Masked modelling, Presto-style: hide 75% of the (timestep, channel-group) tokens, reconstruct them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cropssl.heads import MaskedDecoder
from cropssl.losses.mim import MaskedMSELoss
from cropssl.masking import STRATEGIES, MaskGenerator
from cropssl.methods.base import SSLMethod
from cropssl.schema import BAND_GROUPS, Batch


class MAE(SSLMethod):
    """Presto-style masked autoencoder on pixel time series.

    Args:
        encoder: The encoder (must provide ``embed_tokens``, ``encode`` and ``token_layout``).
        mask_ratio: Fraction of dynamic tokens hidden per sample.
        strategies: Masking strategies, one drawn per sample.
        decoder_dim: Decoder width.
        decoder_depth: Decoder blocks.
        decoder_heads: Decoder attention heads.
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.

    """

    method_name = "mae"

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.75,
        strategies: Sequence[str] = STRATEGIES,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule)
        self.masker = MaskGenerator(mask_ratio, strategies)
        self.groups = tuple(g for g in encoder.dynamic_groups)
        layout = encoder.token_layout(1)
        self.type_names = sorted({name for name, _ in layout})
        self.decoder = MaskedDecoder(
            encoder.embed_dim,
            self.groups,
            num_types=len(self.type_names),
            dim=decoder_dim,
            depth=decoder_depth,
            heads=decoder_heads,
            max_T=encoder.max_T,
        )
        self.loss_fn = MaskedMSELoss()
        self._layout_cache: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def _layout(self, T: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Token type ids ``[N]``, times ``[N]`` and the dynamic grid index ``[T*G]`` (t-major)."""
        if T not in self._layout_cache:
            layout = self.encoder.token_layout(T)
            pos = {(name, t): i for i, (name, t) in enumerate(layout)}
            type_ids = torch.tensor([self.type_names.index(n) for n, _ in layout])
            times = torch.tensor([t if n in self.groups or n == "dynamic_world" else -1 for n, t in layout])
            grid = torch.tensor([pos[(g, t)] for t in range(T) for g in self.groups])
            self._layout_cache[T] = (type_ids, times, grid)
        return tuple(v.to(device) for v in self._layout_cache[T])  # type: ignore[return-value]

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mask, encode the visible tokens, decode, MSE on hidden values that exist in the data."""
        B, T = batch.x.shape[:2]
        G = len(self.groups)
        type_ids, times, grid = self._layout(T, batch.x.device)
        tokens, pad = self.encoder.embed_tokens(batch)
        mim, _ = self.masker(B, T, G, generator=self.rng)
        hide = torch.zeros_like(pad)
        hide[:, grid] = mim.reshape(B, T * G).to(pad.device)
        encoded = self.encoder.encode(tokens, pad | hide)
        pred = self.decoder(encoded, pad, hide & ~pad, type_ids, times, batch.month, grid)
        target_tokens = (hide & ~pad)[:, grid].reshape(B, T, G)
        value_mask = torch.zeros_like(batch.mask)
        for g, name in enumerate(self.groups):
            idx = list(BAND_GROUPS[name])
            value_mask[..., idx] = target_tokens[:, :, g : g + 1].expand(B, T, len(idx))
        value_mask &= ~batch.mask
        loss = self.loss_fn(pred, batch.x, value_mask)
        return loss, {"masked_fraction": target_tokens.float().mean()}
