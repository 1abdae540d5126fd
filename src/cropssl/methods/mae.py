"""Masked modelling, Presto-style: hide 75% of the (timestep, channel-group) tokens, reconstruct them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cropssl.heads import MaskedDecoder
from cropssl.layers import compact_tokens, gather_tokens
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
        band_norm: Weight every band's reconstruction error by the inverse variance of its targets
            (:class:`~cropssl.losses.mim.MaskedMSELoss`); False = Presto's plain MSE, which on real and
            synthetic data is 95 % precipitation and leaves the other bands at their mean.
        optimizer: Optimiser settings, see :class:`SSLMethod`.
        schedule: Learning-rate schedule settings, see :class:`SSLMethod`.
        anchor: L2-SP weight towards the starting weights, see :class:`SSLMethod`.

    """

    method_name = "mae"

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.75,
        strategies: Sequence[str] = STRATEGIES,
        decoder_dim: int = 64,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        band_norm: bool = True,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        anchor: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer=optimizer, schedule=schedule, anchor=anchor)
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
        self.loss_fn = MaskedMSELoss(band_norm=band_norm)
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

    def hidden_tokens(self, B: int, T: int, device: torch.device) -> Tensor:
        """``[B, N]`` True for the dynamic tokens the masking strategy hides (exactly the masker's count)."""
        _, _, grid = self._layout(T, device)
        mim, _ = self.masker(B, T, len(self.groups), generator=self.rng)
        hide = torch.zeros(B, self.encoder.num_tokens(T), dtype=torch.bool, device=device)
        hide[:, grid] = mim.reshape(B, -1).to(device)
        return hide

    def reconstruct(self, batch: Batch, hide: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode only the visible tokens that exist in the data, decode the hidden ones.

        The encoder sees ``tokens[~(pad | hide)]`` (gathered per sample, cut to the longest visible run,
        fillers under the key-padding mask): the MAE paper's and Presto's "encode what you see", with the
        same outputs as attending over all tokens with ``pad | hide`` as key-padding mask.

        Returns:
            ``pred [B, T, 17]``, ``pad [B, N]`` (missing tokens), and ``empty [B]`` (samples with no visible
            token present: nothing to reconstruct from).

        """
        T = batch.x.shape[1]
        type_ids, times, grid = self._layout(T, batch.x.device)
        tokens, pad = self.encoder.embed_tokens(batch)
        index, filler = compact_tokens(pad | hide)
        encoded = self.encoder.encode(gather_tokens(tokens, index), filler)
        pred = self.decoder(encoded, index, filler, pad, type_ids, times, batch.month, grid)
        return pred, pad, filler.all(dim=1)

    def shared_step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mask, encode the visible tokens, decode, MSE on hidden values that exist in the data.

        Samples with no visible token present are left out of the loss (counted in ``skipped_samples``).
        """
        B, T = batch.x.shape[:2]
        G = len(self.groups)
        _, _, grid = self._layout(T, batch.x.device)
        hide = self.hidden_tokens(B, T, batch.x.device)
        pred, pad, empty = self.reconstruct(batch, hide)
        target_tokens = (hide & ~pad)[:, grid].reshape(B, T, G) & ~empty[:, None, None]
        value_mask = torch.zeros_like(batch.mask)
        for g, name in enumerate(self.groups):
            idx = list(BAND_GROUPS[name])
            value_mask[..., idx] = target_tokens[:, :, g : g + 1].expand(B, T, len(idx))
        value_mask &= ~batch.mask
        loss = self.loss_fn(pred, batch.x, value_mask)
        return loss, {"masked_fraction": target_tokens.float().mean(), "skipped_samples": empty.sum().float()}
