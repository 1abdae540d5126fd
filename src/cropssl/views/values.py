"""Views that change values or the location: Gaussian noise, per-band gains, lat/lon jitter."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cropssl.schema import NUM_BANDS, Batch
from cropssl.views.base import Transform, randn


def per_band(std: float | Sequence[float], name: str) -> Tensor:
    """One number or 17 per-band numbers (>= 0) as a ``[17]`` tensor."""
    values = [float(std)] if isinstance(std, (int, float)) else [float(v) for v in std]
    t = torch.tensor(values, dtype=torch.float32)
    if t.numel() not in (1, NUM_BANDS):
        raise ValueError(f"{name} must be a number or {NUM_BANDS} per-band numbers, got {t.numel()}")
    if (t < 0).any():
        raise ValueError(f"{name} must be >= 0")
    return t.expand(NUM_BANDS).clone()


class _PerBandGaussian(Transform):
    """A per-band standard deviation and its scaled normal draws (zero for samples it is not applied to)."""

    def __init__(self, std: float | Sequence[float], p: float) -> None:
        super().__init__(p)
        self.std = per_band(std, "std")

    def _draws(self, batch: Batch, steps: int, generator: torch.Generator | None) -> Tensor:
        """``[B, steps, 17]`` draws of N(0, std**2), zero where the transform is not applied."""
        B, dev, dtype = len(batch), batch.x.device, batch.x.dtype
        applied = self._applied(B, generator, dev)
        z = randn((B, steps, NUM_BANDS), generator, dev).to(dtype) * self.std.to(dev, dtype)
        return z * applied[:, None, None]


class GaussianNoise(_PerBandGaussian):
    """Add Gaussian noise (normalised units) to the present values; missing values stay exactly 0.

    Args:
        std: Noise standard deviation, one number or one per band (17).
        p: Probability that a sample gets noise.

    """

    def __init__(self, std: float | Sequence[float] = 0.02, p: float = 1.0) -> None:
        super().__init__(std, p)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Add noise."""
        noise = self._draws(batch, batch.x.shape[1], generator)
        return batch.replace(x=(batch.x + noise).masked_fill(batch.mask, 0.0))


class LatLonJitter(Transform):
    """Move a sample's location by Gaussian noise, so two views of a pixel disagree on where it is.

    Both views otherwise share the lat/lon token exactly, and a joint-embedding objective can then be
    met by encoding the location alone (measured: SimCLR's and Barlow Twins' transfer to a held-out
    region collapses; ``experiments/ssl_quality``). The noise keeps the region, hides the pixel.
    Latitude is clipped to [-90, 90], longitude wrapped to [-180, 180).

    Args:
        std_deg: Noise standard deviation in degrees (both coordinates).
        p: Probability that a sample's location moves.

    """

    def __init__(self, std_deg: float = 1.0, p: float = 1.0) -> None:
        super().__init__(p)
        if float(std_deg) < 0:
            raise ValueError(f"std_deg must be >= 0 degrees, got {std_deg}")
        self.std_deg = float(std_deg)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Move the locations (samples it is not applied to keep theirs exactly)."""
        if self.p == 0 or self.std_deg == 0:
            return batch
        dev = batch.latlon.device
        applied = self._applied(len(batch), generator, dev)
        moved = batch.latlon + randn(batch.latlon.shape, generator, dev).to(batch.latlon.dtype) * self.std_deg
        lat = moved[:, 0].clamp(-90.0, 90.0)
        lon = torch.remainder(moved[:, 1] + 180.0, 360.0) - 180.0
        return batch.replace(latlon=torch.where(applied[:, None], torch.stack([lat, lon], 1), batch.latlon))


class MultiplicativeJitter(_PerBandGaussian):
    """Scale each band of a sample by ``1 + std * N(0, 1)`` (one factor per sample and band, all steps).

    A per-sample, per-band gain, like a calibration difference between acquisitions; applied to the
    normalised values, so missing values (0) stay exactly 0.

    Args:
        std: Standard deviation of the gain, one number or one per band (17).
        p: Probability that a sample is jittered.

    """

    def __init__(self, std: float | Sequence[float] = 0.05, p: float = 1.0) -> None:
        super().__init__(std, p)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Scale the bands."""
        gain = 1.0 + self._draws(batch, 1, generator)
        return batch.replace(x=(batch.x * gain).masked_fill(batch.mask, 0.0))
