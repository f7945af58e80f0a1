"""Audio aligner: frozen-encoder features per motion frame → trainable self-attention → (B, S, D).

The paper's Fig. 2 shows a frozen Wav2Vec followed by a trainable "Self Attn" that aligns audio to
motion (docs/design.md). Our reading, in order:

1. input: per-frame features of all L encoder layers, already at 25 fps (`models.audio`);
2. learned softmax weights over the L layers (one weight per layer, shared by all frames);
3. a ±w-frame window stacked on the channel axis (edge-padded at both ends of the sequence);
4. a linear projection to the DiT width D, plus a sinusoidal position embedding;
5. 1–2 pre-LN self-attention layers.

Steps 2 and 3 commute (both are linear and per-frame), so weighting before stacking gives the same
result as stacking (B, S, 5, L, C) first while keeping memory at (B, S, 5·C).

Shape legend: B batch · S audio frames (25 fps) · L encoder layers · C encoder channels ·
W = 2·window + 1 stacked frames · D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.conformer import TransformerLayer, sinusoidal_embedding


class AudioAligner(nn.Module):
    """(B, S, L, C) encoder features → (B, S, D) aligned audio features f_a."""

    def __init__(
        self,
        audio_layers: int,
        audio_dim: int,
        width: int,
        heads: int,
        layers: int = 2,
        window: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if audio_layers < 1 or audio_dim < 1:
            raise ValueError(f"audio_layers {audio_layers} and audio_dim {audio_dim} must be ≥ 1")
        if window < 0:
            raise ValueError(f"audio_window {window} must be ≥ 0 (frames on each side)")
        self.audio_layers, self.audio_dim, self.window = audio_layers, audio_dim, window
        self.layer_logits = nn.Parameter(torch.zeros(audio_layers))  # softmax → uniform mix at init
        self.proj = nn.Linear((2 * window + 1) * audio_dim, width)
        self.layers = nn.ModuleList([TransformerLayer(width, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, feats: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """feats (B, S, L, C) → (B, S, D). key_mask (B, S) bool: frames the attention may read."""
        if feats.ndim != 4 or feats.shape[2:] != (self.audio_layers, self.audio_dim):
            raise ValueError(
                f"audio features have shape {tuple(feats.shape)}, expected (B, S, "
                f"{self.audio_layers}, {self.audio_dim}) (audio_layers, audio_dim of the model config)"
            )
        feats = feats.to(self.proj.weight.dtype)
        weights = torch.softmax(self.layer_logits.float(), dim=0).to(feats.dtype)  # (L,)
        x = torch.einsum("bslc,l->bsc", feats, weights)  # (B, S, C)
        x = rearrange(x, "b s c -> b c s")
        x = F.pad(x, (self.window, self.window), mode="replicate")  # (B, C, S + 2w) edge-padded
        x = x.unfold(-1, 2 * self.window + 1, 1)  # (B, C, S, W)
        x = rearrange(x, "b c s w -> b s (w c)")  # (B, S, W·C)
        x = self.proj(x)  # (B, S, D)
        pos = torch.arange(x.shape[1], device=x.device)
        x = x + sinusoidal_embedding(pos, x.shape[-1]).to(x.dtype)  # (B, S, D)
        for layer in self.layers:
            x = layer(x, key_mask)  # (B, S, D)
        return self.norm(x)  # (B, S, D)

    def flops_per_sample(self, frames: int) -> int:
        """Forward FLOPs (2 × multiply-accumulates, attention included) for one sequence of `frames`."""
        s, d, c = frames, self.proj.out_features, self.audio_dim
        flops = 2 * s * self.audio_layers * c  # layer mix
        flops += 2 * s * self.proj.in_features * d  # window projection
        per_layer = 2 * s * d * 3 * d + 4 * s * s * d + 2 * s * d * d + 2 * 2 * s * d * 4 * d
        return flops + len(self.layers) * per_layer
