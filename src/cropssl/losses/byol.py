"""BYOL's normalised regression loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from cropssl.losses.checks import in_fp32


class BYOLLoss(nn.Module):
    """``mean_i (2 - 2 * cos(p_i, z_i))`` (Grill et al. 2020, eq. 2), the target ``z`` detached.

    The squared distance between the L2-normalised prediction and target. The method symmetrises
    (``loss(p0, z1) + loss(p1, z0)``). 0 for identical directions, 4 for opposite ones.
    """

    @in_fp32
    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            p: Online predictions ``[N, D]``.
            z: Target projections ``[N, D]`` (from the momentum encoder; detached here).

        Returns:
            Scalar loss.

        """
        if p.ndim != 2 or p.shape != z.shape:
            raise ValueError(
                f"p and z must be 2-D [N, D] tensors of the same shape, got {tuple(p.shape)} and "
                f"{tuple(z.shape)}"
            )
        cos = F.cosine_similarity(p, z.detach(), dim=1)
        return (2 - 2 * cos).mean()
