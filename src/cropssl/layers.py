"""The transformer building blocks of the encoder and the MAE decoder (one of each; torch only).

Fixed sin/cos tables (positions, months), the lat/lon to unit-sphere map, a pre-norm transformer
block in timm's layout (qkv bias, LayerNorm, GELU MLP, stochastic depth) whose attention takes a key
padding mask and runs PyTorch's fused kernel, and token compaction (encode only the kept tokens). The
parameter names match timm's and Presto's, so the published weights load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "Mlp",
    "cartesian",
    "compact_tokens",
    "drop_padding",
    "gather_tokens",
    "month_encoding_table",
    "sinusoid_encoding_table",
    "static_graph",
    "training_pass_size",
]


# ----------------------------------------------------------------------------------------------------------
# fixed encodings
# ----------------------------------------------------------------------------------------------------------
def sinusoid_encoding_table(n_positions: int, d_hid: int, base: float = 1000.0) -> Tensor:
    """Presto's sinusoidal position table, computed in float64 exactly like the reference, then float32.

    Args:
        n_positions: Number of positions (rows).
        d_hid: Encoding size (columns).
        base: Wavelength base (Presto uses 1000).

    Returns:
        ``[n_positions, d_hid]`` float32 table; even columns are sines, odd columns cosines.

    """
    rows = []
    for pos in range(n_positions):
        angles = [pos / math.pow(base, 2 * (j // 2) / d_hid) for j in range(d_hid)]
        rows.append([math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(angles)])
    return torch.tensor(rows, dtype=torch.float64).reshape(n_positions, d_hid).float()


def month_encoding_table(d_hid: int) -> Tensor:
    """Presto's month table: ``d_hid/2`` copies of ``sin(2 pi m / 12)`` then as many of the cosine.

    Args:
        d_hid: Encoding size, must be even.

    Returns:
        ``[12, d_hid]`` float32 table, row ``m`` for month ``m`` (0 = January).

    """
    if d_hid % 2:
        raise ValueError(f"month encoding size must be even, got {d_hid}")
    angles = torch.arange(12, dtype=torch.float64) / (12 / (2 * math.pi))
    half = d_hid // 2
    return torch.cat(
        [angles.sin()[:, None].expand(12, half), angles.cos()[:, None].expand(12, half)], 1
    ).float()


def cartesian(latlon: Tensor) -> Tensor:
    """Lat/lon in degrees ``[B, 2]`` to the cartesian point ``[B, 3]`` on the unit sphere (Presto)."""
    rad = latlon * (math.pi / 180)
    lat, lon = rad[:, 0], rad[:, 1]
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


# ----------------------------------------------------------------------------------------------------------
# transformer blocks (timm layout and parameter names, with a key padding mask)
# ----------------------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or with ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """Drop whole residual branches of random samples, rescaling the kept ones."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:  # noqa: D102
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head self attention with a fused qkv projection, using ``F.scaled_dot_product_attention``.

    Parameter names (``qkv``, ``proj``) match timm's / Presto's ``Attention``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"d={dim} must be divisible by heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            x: ``[B, N, C]`` tokens.
            attn_mask: Optional boolean ``[B, 1, 1, N]`` (or broadcastable), True = key takes part.

        Returns:
            ``[B, N, C]``.

        """
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer GELU MLP (timm's ``Mlp`` names: ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply ``fc2(gelu(fc1(x)))``."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with the state-dict names of timm / Presto (``norm1, attn, norm2, mlp``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Residual attention then residual MLP; ``attn_mask`` as in :meth:`Attention.forward`."""
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ----------------------------------------------------------------------------------------------------------
# token compaction (encode only the kept tokens)
# ----------------------------------------------------------------------------------------------------------
def static_graph() -> bool:
    """True while tracing, scripting, exporting to ONNX or compiling: shapes must not depend on data."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


def compact_tokens(drop: Tensor) -> tuple[Tensor, Tensor]:
    """Indices that gather the kept tokens of every sample to the front, cut to the longest kept run.

    Attention with a key-padding mask gives every kept token the same output whether the dropped tokens
    are in the sequence or not, so encoding ``tokens.gather(index)`` with ``pad`` gives exactly the kept
    tokens' outputs of the full sequence at a fraction of the cost (MAE: only the visible tokens; real
    data: no missing tokens).

    Args:
        drop: ``[B, N]`` bool, True for tokens to leave out.

    Returns:
        ``index [B, n]`` (long, positions into ``N``; kept ones first, in their original order) and
        ``pad [B, n]`` (True where a sample has fewer than ``n`` kept tokens: filler to ignore), with
        ``n`` the largest number of kept tokens of any sample (at least 1).

    """
    keep = ~drop
    order = torch.sort(drop.to(torch.uint8), dim=1, stable=True).indices
    n = max(int(keep.sum(dim=1).max().item()), 1) if keep.numel() else 1
    index = order[:, :n]
    return index, drop.gather(1, index)


#: Token-equivalents one more pass through the blocks costs (launch and autograd overhead), and the
#: fewest samples a training pass holds; see :func:`training_pass_size`.
PASS_OVERHEAD_TOKENS = 512
MIN_PASS_SAMPLES = 32


def training_pass_size(kept: Tensor) -> int:
    """Samples per pass for a training batch sorted by kept-token count (ascending).

    Each pass is cut to its longest sample, so splitting a batch whose samples hold very different
    numbers of tokens (DINO's local views beside its global ones, cloudy pixels beside clear ones) into
    passes of similar samples saves the padding; each extra pass costs launch and autograd overhead. Of
    the batch in one pass and in 2, 4 or 8 equal passes (of at least ``MIN_PASS_SAMPLES``), the size
    with the fewest tokens to process (padding and ``PASS_OVERHEAD_TOKENS`` per pass included) wins.

    Args:
        kept: ``[B]`` kept tokens per sample, ascending.

    Returns:
        Samples per pass (``B``: one pass).

    """
    n = len(kept)
    best, best_cost = n, n * int(kept[-1]) + PASS_OVERHEAD_TOKENS
    for parts in (2, 4, 8):
        size = -(-n // parts)
        if size < MIN_PASS_SAMPLES:
            break
        starts = range(0, n, size)  # each pass padded to its last (longest) sample
        cost = sum((min(i + size, n) - i) * int(kept[min(i + size, n) - 1]) for i in starts)
        cost += PASS_OVERHEAD_TOKENS * len(starts)
        if cost < best_cost:
            best, best_cost = size, cost
    return best


def gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """``tokens [B, N, d]`` at ``index [B, n]`` -> ``[B, n, d]``."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def drop_padding(tokens: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
    """The tokens and padding mask with the padded tokens left out (unchanged when none is padded).

    Args:
        tokens: ``[B, N, d]``.
        pad: ``[B, N]`` bool, True = padded.

    Returns:
        ``tokens [B, n, d]`` and ``pad [B, n]`` of :func:`compact_tokens`.

    """
    if not bool(pad.any()):
        return tokens, pad
    index, pad = compact_tokens(pad)
    return gather_tokens(tokens, index), pad
