"""Masked-modelling reconstruction loss."""

from __future__ import annotations

from torch import Tensor, nn


class MaskedMSELoss(nn.Module):
    """Mean squared error over the selected values only.

    ``loss = sum(mask * (pred - target)^2) / sum(mask)``; 0 (with a gradient path) when nothing is
    selected, so batches whose hidden tokens were all missing in the data do not produce NaN.
    """

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            pred: Predictions, any shape.
            target: Targets, same shape.
            mask: Boolean, same shape; True = value counts.

        """
        if pred.shape != target.shape or mask.shape != pred.shape:
            raise ValueError(f"shape mismatch: pred {pred.shape}, target {target.shape}, mask {mask.shape}")
        w = mask.to(pred.dtype)
        return ((pred - target) ** 2 * w).sum() / w.sum().clamp(min=1.0)
