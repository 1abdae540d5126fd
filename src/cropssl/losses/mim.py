"""Masked-modelling reconstruction loss."""

from __future__ import annotations

from torch import Tensor, nn

from cropssl.losses.checks import in_fp32


class MaskedMSELoss(nn.Module):
    """Mean squared error over the selected values only, optionally with every band weighted equally.

    ``loss = sum(mask * w_b * (pred - target)^2) / sum(mask)``; 0 (with a gradient path) when nothing is
    selected, so batches whose hidden tokens were all missing in the data do not produce NaN.

    With ``band_norm`` the weight of band ``b`` (last axis) is ``1 / var_b``, the variance of the selected
    targets of that band in the batch (detached, at least ``eps``): a band that varies a lot in normalised
    units (precipitation: variance ~2 against ~0.005 for a Sentinel-2 reflectance in Presto's
    normalisation) no longer makes most of the loss, and predicting a band's mean scores 1 for every band.
    Without it (``band_norm=False``, Presto's loss) a model that reconstructs precipitation and nothing else
    gets most of the way.

    Args:
        band_norm: Weight each band by the inverse variance of its selected targets.
        eps: Smallest variance used.

    """

    def __init__(self, band_norm: bool = False, eps: float = 1e-4) -> None:
        super().__init__()
        self.band_norm = bool(band_norm)
        self.eps = float(eps)

    @in_fp32
    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            pred: Predictions, any shape (bands on the last axis when ``band_norm``).
            target: Targets, same shape.
            mask: Boolean, same shape; True = value counts.

        """
        if pred.shape != target.shape or mask.shape != pred.shape:
            raise ValueError(f"shape mismatch: pred {pred.shape}, target {target.shape}, mask {mask.shape}")
        w = mask.to(pred.dtype)
        err = (pred - target) ** 2 * w
        if self.band_norm:
            dims = tuple(range(target.ndim - 1))
            n = w.sum(dims).clamp(min=1.0)
            mean = (target * w).sum(dims) / n
            var = (((target - mean) ** 2) * w).sum(dims) / n
            err = err / var.detach().clamp(min=self.eps)
        return err.sum() / w.sum().clamp(min=1.0)
