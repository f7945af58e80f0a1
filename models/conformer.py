"""Building blocks of the motion DiT: embeddings, attention, feed-forward, convolution, Conformer.

Pure torch + einops. Used by `models.dit` (Conformer trunk), `models.aligner` (plain transformer
layers) and `models.emotion` (adaLN-Zero DiT blocks reuse `Attention` and `FeedForward`).

Shape legend: B batch · S sequence length (Tp context + T window frames) · D width ·
H heads · Dh = D / H head width · F frequency channels of a sinusoidal embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# ------------------------------------------------------------------------------------------------
# Utility functions
# ------------------------------------------------------------------------------------------------


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Positions or timesteps (N,) → (N, dim) [cos | sin] features, always computed in float32.

    float32 on purpose: under DeepSpeed bf16 everything else is bf16, but t up to 999 and
    frequencies up to 1 need more than bf16's 8 mantissa bits (DeepSpeed bf16 casts every float input).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half
    )  # (F,)
    args = x.float()[:, None] * freqs[None]  # (N, F)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2F)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (N, dim)
    return emb


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: x (B, S, D), shift/scale (B, D) → (B, S, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


# ------------------------------------------------------------------------------------------------
# Embedders
# ------------------------------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """T-Proj: diffusion step t (B,) → sinusoidal (B, F) → MLP → (B, D)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.freq_dim)  # (B, F) float32
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (B, D)


# ------------------------------------------------------------------------------------------------
# Sub-layers
# ------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention` (flash/mem-efficient on GPU)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x (B, S, D); key_mask (B, S) bool, True = may be attended to → (B, S, D)."""
        q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.heads)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, S, Dh)
        y = rearrange(y, "b h s d -> b s (h d)")  # (B, S, D)
        return self.proj(y)  # (B, S, D)


class FeedForward(nn.Module):
    """Position-wise MLP D → mult·D → D (SiLU/Swish, as in the Conformer paper)."""

    def __init__(self, width: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, mult * width),  # (B, S, mult·D)
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(mult * width, width),  # (B, S, D)
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU → depthwise conv over time → norm, Swish → pointwise.

    LayerNorm instead of the paper's BatchNorm: the CFG passes of one sampling batch must not
    share statistics, and stage two runs the frozen trunk with small, label-skewed batches.
    Pointwise convolutions are `nn.Linear` on (B, S, D) (same maths, no transposes).
    """

    def __init__(self, width: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"conv_kernel {kernel} must be odd so that the output keeps the length")
        self.pointwise_in = nn.Linear(width, 2 * width)
        self.depthwise = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.pointwise_out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.glu(self.pointwise_in(x), dim=-1)  # (B, S, 2D) → (B, S, D)
        x = rearrange(x, "b s d -> b d s")  # channels first for Conv1d
        x = rearrange(self.depthwise(x), "b d s -> b s d")  # (B, S, D)
        x = self.pointwise_out(F.silu(self.norm(x)))  # (B, S, D)
        return self.dropout(x)


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------


class TransformerLayer(nn.Module):
    """Plain pre-LN transformer layer (the audio aligner's self-attention)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, 4, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x (B, S, D), key_mask (B, S) → (B, S, D)."""
        x = x + self.dropout(self.attn(self.norm1(x), key_mask))
        return x + self.ffn(self.norm2(x))


class ConformerBlock(nn.Module):
    """Conformer block (½FFN, MHSA, depthwise conv, ½FFN) with adaLN modulation of every sub-layer.

    The global condition c (B, D) = T-Proj(t) + ID-Proj(f_id) yields, per sub-layer, a shift and a
    scale for its input LayerNorm and a gate on its residual branch. The modulation layer is
    zero-initialised (`MotionDiT.initialize_weights`), so every gate is 0 and the block is the
    identity at init (adaLN-Zero, DiT).
    """

    SUBLAYERS = 4  # ffn1, attn, conv, ffn2; each takes (shift, scale, gate)

    def __init__(self, width: int, heads: int, conv_kernel: int, dropout: float = 0.0, ffn_mult: int = 4):
        super().__init__()
        self.norms = nn.ModuleList(
            [nn.LayerNorm(width, elementwise_affine=False, eps=1e-6) for _ in range(self.SUBLAYERS)]
        )
        self.ffn1 = FeedForward(width, ffn_mult, dropout)
        self.attn = Attention(width, heads, dropout)
        self.conv = ConvModule(width, conv_kernel, dropout)
        self.ffn2 = FeedForward(width, ffn_mult, dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * self.SUBLAYERS * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x (B, S, D), c (B, D) → (B, S, D)."""
        mods = self.adaLN_modulation(c).chunk(3 * self.SUBLAYERS, dim=-1)  # 12 × (B, D)
        shift, scale, gate = mods[0::3], mods[1::3], mods[2::3]
        branches = (
            lambda h: 0.5 * self.ffn1(h),  # half-step FFN (Macaron)
            self.attn,
            self.conv,
            lambda h: 0.5 * self.ffn2(h),
        )
        for i, branch in enumerate(branches):
            h = modulate(self.norms[i](x), shift[i], scale[i])  # (B, S, D)
            x = x + gate[i][:, None] * branch(h)  # (B, S, D)
        return x
