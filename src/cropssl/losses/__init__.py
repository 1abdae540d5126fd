"""Losses: one pure ``nn.Module`` per SSL objective (no Lightning inside)."""

from cropssl.losses.byol import BYOLLoss
from cropssl.losses.contrastive import MoCoV3Loss, NTXentLoss
from cropssl.losses.dino import DINOLoss
from cropssl.losses.distill import EmbeddingDistillLoss
from cropssl.losses.mim import MaskedMSELoss
from cropssl.losses.redundancy import BarlowTwinsLoss, VICRegLoss

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "DINOLoss",
    "EmbeddingDistillLoss",
    "MaskedMSELoss",
    "MoCoV3Loss",
    "NTXentLoss",
    "VICRegLoss",
]
