"""SyncNet v2 and its scoring (Sync-C / Sync-D, a.k.a. LSE-C / LSE-D), re-implemented from joonson/syncnet_python.

Module attribute names equal the public `syncnet_v2.model` keys, so the file loads strictly
(`SyncNet.from_file`). The scoring follows `SyncNetInstance.evaluate` (docs/metrics.md): MFCC
(python_speech_features 0.6 defaults, int16-scale audio) → 5-frame video windows / 20-step MFCC
windows → distances over offsets ±vshift with zero padding → Sync-D = min mean distance,
Sync-C = median − min, offset = vshift − argmin. Data preparation (sync filtering) and the
`metrics.sync.SyncMetric` both use it.

Shape legend: T video frames (25 fps) · S audio samples (16 kHz) · L = min(T, S // 640) − 5 windows.
"""

from __future__ import annotations

import decimal
import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct
from torch import Tensor, nn

from models.clock import SAMPLE_RATE, SAMPLES_PER_FRAME
from models.weights import load_strict

MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
WINDOW = 5  # video frames per SyncNet window (0.2 s)
CONFIG_KEY = "metrics.sync.weights_path"

# ------------------------------------------------------------------------------------------------
# MFCC front end: python_speech_features 0.6 `mfcc(signal, 16000)` with library defaults
# ------------------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=8)
def mel_filterbank(nfilt: int = 26, nfft: int = 512, sample_rate: int = SAMPLE_RATE,
                   lowfreq: float = 0.0) -> np.ndarray:
    """Triangular mel filters (nfilt, nfft//2+1), python_speech_features `get_filterbanks`."""
    mel = np.linspace(_hz2mel(lowfreq), _hz2mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / sample_rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return fb


def mfcc(
    signal: np.ndarray | Tensor,
    sample_rate: int = SAMPLE_RATE,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: int = 22,
) -> np.ndarray:
    """(S,) audio → (N, numcep) float64 MFCC, N = 1 + ⌈(S − 400)/160⌉; c0 = log frame energy.

    Matches python_speech_features 0.6 `mfcc` (rectangular window, appendEnergy=True). SyncNet expects
    int16-scale samples: float audio in [−1, 1] shifts c0 by −2·ln 32768 = −20.794.
    """
    sig = np.asarray(signal.cpu().numpy() if isinstance(signal, Tensor) else signal).astype(np.float64).reshape(-1)
    sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])  # pre-emphasis
    flen, fstep = _round_half_up(winlen * sample_rate), _round_half_up(winstep * sample_rate)
    n = 1 if len(sig) <= flen else 1 + math.ceil((len(sig) - flen) / fstep)
    sig = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - len(sig))])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    frames = sig[idx]  # (N, 400), rectangular window
    pspec = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft  # (N, 257)
    eps = np.finfo(float).eps
    energy = pspec.sum(1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ mel_filterbank(nfilt, nfft, sample_rate).T  # (N, nfilt)
    feat = np.log(np.where(feat == 0, eps, feat))
    feat = dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
    lift = 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    feat = feat * lift
    feat[:, 0] = np.log(energy)
    return feat


# ------------------------------------------------------------------------------------------------
# SyncNet S(num_layers_in_fc_layers=1024): attribute names = public checkpoint keys
# ------------------------------------------------------------------------------------------------


def _conv_bn(conv: nn.Module, ch: int, bn: type[nn.Module]) -> list[nn.Module]:
    return [conv, bn(ch), nn.ReLU(inplace=True)]


def _fc(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, d))


class SyncNet(nn.Module):
    """SyncNet v2 (audio MFCC stream + 5-frame lip stream → 1024-d embeddings)."""

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        b2, b3 = nn.BatchNorm2d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_bn(nn.Conv2d(1, 64, 3, 1, 1), 64, b2),  # 0-2
            nn.MaxPool2d(1, 1),  # 3
            *_conv_bn(nn.Conv2d(64, 192, 3, 1, 1), 192, b2),  # 4-6
            nn.MaxPool2d(3, (1, 2)),  # 7
            *_conv_bn(nn.Conv2d(192, 384, 3, 1, 1), 384, b2),  # 8-10
            *_conv_bn(nn.Conv2d(384, 256, 3, 1, 1), 256, b2),  # 11-13
            *_conv_bn(nn.Conv2d(256, 256, 3, 1, 1), 256, b2),  # 14-16
            nn.MaxPool2d(3, 2),  # 17
            *_conv_bn(nn.Conv2d(256, 512, (5, 4), 1, 0), 512, b2),  # 18-20
        )
        self.netfcaud = _fc(embed_dim)
        self.netfclip = _fc(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv_bn(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, b3),  # 0-2
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 3
            *_conv_bn(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, b3),  # 4-6
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 7
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),  # 8-10
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),  # 11-13
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),  # 14-16
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 17
            *_conv_bn(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, b3),  # 18-20
        )

    def forward_aud(self, x: Tensor) -> Tensor:
        """MFCC windows (N, 1, 13, 20) → (N, 1024)."""
        h = self.netcnnaud(x)  # (N, 512, 1, 1)
        return self.netfcaud(h.flatten(1))

    def forward_lip(self, x: Tensor) -> Tensor:
        """BGR 0..255 windows (N, 3, 5, 224, 224) → (N, 1024)."""
        return self.netfclip(self.forward_lipfeat(x))

    def forward_lipfeat(self, x: Tensor) -> Tensor:
        """(N, 3, 5, 224, 224) → conv feature (N, 512)."""
        return self.netcnnlip(x).flatten(1)  # (N, 512, 1, 1, 1) → (N, 512)

    @classmethod
    def from_file(cls, path: str | Path | None, config_key: str = CONFIG_KEY) -> SyncNet:
        """Load `syncnet_v2.model` (plain tensor dict) strictly; eval mode."""
        return load_strict(cls(), path, config_key).eval()


# ------------------------------------------------------------------------------------------------
# Scoring (SyncNetInstance.evaluate + calc_pdist), vectorised
# ------------------------------------------------------------------------------------------------


def _check_inputs(frames: Tensor | np.ndarray, audio: Tensor | np.ndarray) -> tuple[Tensor, np.ndarray]:
    fr = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, Tensor) else frames
    if fr.dim() != 4 or fr.shape[-1] != 3 or tuple(fr.shape[1:3]) != (224, 224):
        raise ValueError(f"frames must be (T, 224, 224, 3) BGR crops, got {tuple(fr.shape)}")
    if fr.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 BGR 0..255, got {fr.dtype}")
    au = audio.cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
    if au.ndim != 1:
        raise ValueError(f"audio must be mono (S,), got shape {au.shape}")
    if au.dtype != np.int16:
        raise ValueError(f"audio must be int16 at 16 kHz (SyncNet's MFCC uses int16 scale), got {au.dtype}")
    return fr, au


def num_windows(n_frames: int, n_samples: int) -> int:
    """Number of SyncNet windows: min(T, ⌊S/640⌋) − 5 (the reference skips the last possible window)."""
    return max(min(n_frames, n_samples // SAMPLES_PER_FRAME) - WINDOW, 0)


def _device(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def lip_window_features(net: SyncNet, frames: Tensor, n_win: int, batch_size: int = 20) -> Tensor:
    """Frames (T, 224, 224, 3) uint8 BGR → (n_win, 1024) video embeddings of frames[i:i+5]."""
    dev = _device(net)
    vid = frames.permute(3, 0, 1, 2)  # (3, T, 224, 224)
    out = []
    for start in range(0, n_win, batch_size):
        idx = range(start, min(start + batch_size, n_win))
        batch = torch.stack([vid[:, i : i + WINDOW] for i in idx]).to(dev, torch.float32)  # (B, 3, 5, 224, 224)
        out.append(net.forward_lip(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1024)


@torch.inference_mode()
def audio_window_features(net: SyncNet, audio: np.ndarray, n_win: int, batch_size: int = 20) -> Tensor:
    """int16 audio (S,) → (n_win, 1024) audio embeddings of MFCC[4i : 4i+20]."""
    dev = _device(net)
    cc = torch.from_numpy(mfcc(audio).T.astype(np.float32))  # (13, N_mfcc)
    out = []
    for start in range(0, n_win, batch_size):
        idx = range(start, min(start + batch_size, n_win))
        batch = torch.stack([cc[:, MFCC_PER_FRAME * i : MFCC_PER_FRAME * i + 20] for i in idx])  # (B, 13, 20)
        out.append(net.forward_aud(batch[:, None].to(dev)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1024)


def offset_distances(im_feat: Tensor, cc_feat: Tensor, vshift: int = 15) -> Tensor:
    """calc_pdist: (L, D), (L, D) → dists (L, 2·vshift+1); audio zero-padded by vshift on both ends."""
    pad = F.pad(cc_feat, (0, 0, vshift, vshift))  # (L + 2v, D)
    win = pad.unfold(0, 2 * vshift + 1, 1).transpose(1, 2)  # (L, 2v+1, D)
    return (im_feat[:, None, :] - win + 1e-6).norm(dim=-1)  # pairwise_distance, eps added to the difference


def scores_from_distances(dists: Tensor, vshift: int = 15) -> tuple[int, float, float]:
    """dists (L, 2v+1) → (offset, confidence = median − min, min_dist) of the mean distance curve."""
    mdist = dists.mean(0)  # (2v+1,)
    minval, minidx = mdist.min(0)
    conf = mdist.median() - minval  # torch.median: lower median (31 entries → exact)
    return vshift - int(minidx), float(conf), float(minval)


def sync_scores(
    net: SyncNet, frames: Tensor | np.ndarray, audio: Tensor | np.ndarray, vshift: int = 15, batch_size: int = 20
) -> tuple[int, float, float]:
    """(offset, confidence (Sync-C), min_dist (Sync-D)) of one clip.

    frames: uint8 (T, 224, 224, 3) BGR face/mouth crops at 25 fps; audio: int16 (S,) at 16 kHz.
    Positive offset = audio leads video by that many frames.
    """
    fr, au = _check_inputs(frames, audio)
    n_win = num_windows(fr.shape[0], au.shape[0])
    if n_win < 1:
        raise ValueError(f"clip too short for SyncNet: {fr.shape[0]} frames, {au.shape[0]} samples (need ≥ 6 frames)")
    was_training = net.training
    net.eval()
    im = lip_window_features(net, fr, n_win, batch_size)
    cc = audio_window_features(net, au, n_win, batch_size)
    net.train(was_training)
    return scores_from_distances(offset_distances(im, cc, vshift), vshift)


