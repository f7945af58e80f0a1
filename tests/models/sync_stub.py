"""A stub SyncNet whose scores are known: used by the SyncNet scoring and Sync metric tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from models.clock import SAMPLES_PER_FRAME


class BrightnessEnergyNet(nn.Module):
    """Stub SyncNet: video window → its 5 mean brightnesses; audio window → c0 pooled to 5 frames (z-scored)."""

    def forward_lip(self, x: Tensor) -> Tensor:  # (N, 3, 5, 224, 224) → (N, 5)
        return _z(x.mean(dim=(1, 3, 4)))

    def forward_aud(self, x: Tensor) -> Tensor:  # (N, 1, 13, 20) → (N, 5)
        return _z(x[:, 0, 0].reshape(-1, 5, 4).mean(-1))


def _z(x: Tensor) -> Tensor:
    return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)


def make_clip(n_frames: int, extra: int = 12, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Frames whose brightness follows log a_t² and int16 audio whose chunk t has amplitude a_t."""
    g = np.random.default_rng(seed)
    amp = 10 ** g.uniform(1.5, 4.0, n_frames + extra)  # a_t
    noise = g.standard_normal((n_frames + extra, SAMPLES_PER_FRAME))
    audio = (noise * amp[:, None]).clip(-32767, 32767).astype(np.int16).reshape(-1)
    b = np.log(amp**2)
    b = (b - b.min()) / (b.max() - b.min()) * 200 + 20
    frames = np.broadcast_to(b[:n_frames, None, None, None], (n_frames, 224, 224, 3)).astype(np.uint8)
    return torch.from_numpy(frames.copy()), audio, noise
