"""Frozen audio encoders: 16 kHz waveform → per-video-frame features of every layer.

Both encoders share one interface, ``forward(wav (B, S), num_frames) → (B, num_frames, L, C)`` at
25 fps, so the aligner and the DiT never know which one produced their input:

* ``wav2vec2``: a transformers `Wav2Vec2Model` from a local directory (never downloaded); all L
  transformer hidden states (``hidden_states[1:]``) linearly interpolated from 50 Hz to the video
  frame count (the Hallo / Playmate2 audio-processor convention); C = hidden_size.
* ``mel``: weight-free log-mel, one STFT frame per video frame (hop 640 samples, centred on the
  middle of the video frame), L = 1, C = n_mels. torch only (no torchaudio).

`audio_feature_shape(cfg)` gives (L, C) without loading weights (wav2vec2: reads config.json only),
so the DiT can be sized first. `build_audio_encoder(cfg)` is the one function that reads files.

Shape legend: B batch · S samples (16 kHz) · N encoder frames · T video frames (25 fps) · L layers ·
C channels · F frequency bins · M mel bands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.clock import SAMPLE_RATE, SAMPLES_PER_FRAME
from models.weights import WeightsError, check_keys

HOP = SAMPLES_PER_FRAME  # the log-mel hop: one STFT frame per video frame
WAV2VEC2_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json")


@dataclass
class AudioEncoderConfig:
    """Which frozen audio encoder turns the waveform into per-frame features."""

    name: str = field(default="mel", metadata={"choices": ("mel", "wav2vec2")})
    wav2vec2_path: Optional[str] = None  # local transformers directory (config.json + weights)
    n_mels: int = field(default=80, metadata={"range": (1, 512)})  # mel bands (mel: C = n_mels)
    n_fft: int = field(default=1024, metadata={"range": (640, 8192)})  # 64 ms window ≥ one 640-sample hop
    f_min: float = field(default=40.0, metadata={"range": (0.0, 8000.0)})  # Hz
    f_max: float = field(default=7600.0, metadata={"range": (1.0, 8000.0)})  # Hz, below Nyquist (8 kHz)
    # The audio context the encoder sees at once, in video frames: every path (training windows,
    # `shards precompute`, generation) encodes windows of exactly this length (see `encode_windowed`).
    # Derived by the config loader from the DiT's training window: model.tp + model.t_window.
    context_frames: int = field(default=125, metadata={"range": (2, 100_000)})
    # Frames shared by neighbouring windows of a longer clip; each frame's features come from the window
    # it sits most centrally in, so it sees at least context_overlap / 2 frames of audio either side.
    # Derived by the config loader: 2 · model.tp (at most half the context).
    context_overlap: int = field(default=50, metadata={"range": (0, 99_999)})

    def __post_init__(self) -> None:
        if self.context_overlap >= self.context_frames:
            raise ValueError(f"context_overlap {self.context_overlap} must be below context_frames "
                             f"{self.context_frames} (windows must advance)")


# ------------------------------------------------------------------------------------------------
# The audio envelope (a weight-free per-frame loudness: synthetic mouths follow it, metrics compare with it)
# ------------------------------------------------------------------------------------------------


def audio_envelope(wav: Tensor | np.ndarray, frames: int, samples_per_frame: int = SAMPLES_PER_FRAME) -> Tensor:
    """(S,) audio → (frames,) RMS of each 640-sample chunk: env[t] = sqrt(mean(wav[640t:640t+640]²)).

    int16 input is scaled to [−1, 1]; missing samples at the end count as silence.
    """
    w = torch.as_tensor(np.asarray(wav) if not isinstance(wav, Tensor) else wav)
    scale = 32768.0 if w.dtype == torch.int16 else 1.0
    w = w.reshape(-1).to(torch.float64) / scale
    need = frames * samples_per_frame
    w = torch.nn.functional.pad(w[:need], (0, max(need - w.numel(), 0)))
    return w.reshape(frames, samples_per_frame).square().mean(1).sqrt()  # (T,)


# ------------------------------------------------------------------------------------------------
# Log-mel (weight-free)
# ------------------------------------------------------------------------------------------------


def hz_to_mel(f: Tensor) -> Tensor:
    """HTK mel scale: 2595·log10(1 + f/700)."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, f_min: float, f_max: float, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Triangular HTK-mel filters (F = n_fft//2 + 1, M), each normalised to unit area (Slaney-style)."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    edges = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2,
                                     dtype=torch.float64))  # (M+2,)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    up = (freqs[:, None] - lo) / (mid - lo)  # (F, M)
    down = (hi - freqs[:, None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (hi - lo))  # equal area per band
    return fb.float()  # (F, M)


LOG_MEL_SHIFT = 6.5  # fixed affine (no data statistics): (ln(mel + 1e-6) + 6.5) / 4 ≈ N(0, 1) on speech
LOG_MEL_SCALE = 4.0


class MelEncoder(nn.Module):
    """Weight-free log-mel: (B, S) → (B, T, 1, n_mels), frame t centred on sample 640·t + 320."""

    pads_with_silence = True  # a clip's features do not depend on zero padding after its end

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        if cfg.n_fft < HOP:
            raise ValueError(f"audio.n_fft {cfg.n_fft} must be ≥ the hop of {HOP} samples (one video frame)")
        if not 0.0 <= cfg.f_min < cfg.f_max <= SAMPLE_RATE / 2:
            raise ValueError(f"need 0 ≤ audio.f_min < audio.f_max ≤ 8000 Hz, got {cfg.f_min}, {cfg.f_max}")
        self.n_fft = cfg.n_fft
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)
        self.register_buffer("fb", mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max), persistent=False)

    def forward(self, wav: Tensor, num_frames: int) -> Tensor:
        """wav: (B, S) float in [−1, 1] at 16 kHz → (B, num_frames, 1, n_mels); missing audio = silence."""
        need = num_frames * HOP
        x = F.pad(wav.float()[:, :need], (0, max(need - wav.shape[1], 0)))  # (B, T·640)
        side = (self.n_fft - HOP) // 2  # frames of n_fft centred on each 640-sample chunk
        x = F.pad(x, (side, self.n_fft - HOP - side))  # (B, n_fft + 640·(T−1))
        spec = torch.stft(x, self.n_fft, hop_length=HOP, window=self.window, center=False,
                          return_complex=True)  # (B, F, T)
        power = spec.real.square() + spec.imag.square()  # (B, F, T)
        mel = torch.einsum("bft,fm->btm", power, self.fb)  # (B, T, M)
        feats = (torch.log(mel + 1e-6) + LOG_MEL_SHIFT) / LOG_MEL_SCALE  # ≈ zero mean, unit spread on speech
        return feats[:, :, None, :]  # (B, T, 1, M)


# ------------------------------------------------------------------------------------------------
# wav2vec2 (frozen, from a local directory)
# ------------------------------------------------------------------------------------------------


class Wav2Vec2Encoder(nn.Module):
    """Frozen transformers Wav2Vec2Model: (B, S) → all hidden layers at 25 fps (B, T, L, C)."""

    pads_with_silence = False  # attention and normalisation see the whole input: encode clips one by one

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize  # zero-mean unit-variance per utterance (the feature extractor's do_normalize)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Wav2Vec2Encoder:
        """Always eval: a frozen encoder never applies dropout or SpecAugment masking."""
        return super().train(False)

    def forward(self, wav: Tensor, num_frames: int) -> Tensor:
        """wav: (B, S) float in [−1, 1] at 16 kHz → (B, num_frames, L, C)."""
        x = wav.float()
        if self.normalize:
            x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-7)
        hidden = self.model(x, output_hidden_states=True).hidden_states[1:]  # L × (B, N, C)
        h = torch.stack(hidden, dim=1)  # (B, L, N, C)
        b, layers, n, c = h.shape
        h = h.permute(0, 1, 3, 2).reshape(b * layers, c, n)  # (B·L, C, N)
        h = F.interpolate(h, size=num_frames, mode="linear", align_corners=True)  # (B·L, C, T)
        return h.reshape(b, layers, c, num_frames).permute(0, 3, 1, 2)  # (B, T, L, C)


def _wav2vec2_dir(cfg: AudioEncoderConfig) -> Path:
    """The configured directory, or a FileNotFoundError naming the key and every missing file."""
    if not cfg.wav2vec2_path:
        raise ValueError("audio.wav2vec2_path is not set: the wav2vec2 encoder needs a local transformers "
                         "directory (config.json + model.safetensors); set audio.wav2vec2_path=DIR or audio.name=mel")
    d = Path(cfg.wav2vec2_path).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"audio.wav2vec2_path: {d} is not a directory; it must hold a transformers "
                                "Wav2Vec2 model saved with save_pretrained (config.json + model.safetensors)")
    missing = [] if (d / "config.json").is_file() else ["config.json"]
    if not any((d / w).is_file() for w in WAV2VEC2_WEIGHTS):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise FileNotFoundError(f"audio.wav2vec2_path: {d} is incomplete, missing {', '.join(missing)}; "
                                "download the model once (e.g. huggingface-cli download) and point the key at it")
    return d


# Weights a public wav2vec2 file may carry besides the encoder (CTC / pre-training heads), and encoder
# weights a file may lack because a frozen encoder never uses them (SpecAugment's mask embedding).
WAV2VEC2_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "dropout_features")
WAV2VEC2_UNUSED = ("masked_spec_embed",)


def load_wav2vec2(cfg: AudioEncoderConfig) -> Wav2Vec2Encoder:
    """Load the frozen wav2vec2 encoder from `cfg.wav2vec2_path` (local files only; never downloads).

    transformers reads the files; its loading report goes through `models.weights.check_keys`, so
    an encoder weight the file lacks (which transformers would leave randomly initialised) or a
    shape mismatch is an error naming the keys, as for every other network.
    """
    from transformers import Wav2Vec2Model

    d = _wav2vec2_dir(cfg)
    try:
        model, info = Wav2Vec2Model.from_pretrained(str(d), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"audio.wav2vec2_path: cannot load {d} ({type(e).__name__}: {e})") from None
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(WAV2VEC2_UNUSED)]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(WAV2VEC2_HEAD_PREFIXES)]
    shapes = [str(m) for m in info.get("mismatched_keys", [])]
    check_keys(f"audio.wav2vec2_path: {d}", missing, unexpected, shapes,
               "HINT: point audio.wav2vec2_path at a wav2vec2-base directory saved with save_pretrained")
    pre = d / "preprocessor_config.json"
    normalize = bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True
    return Wav2Vec2Encoder(model, normalize=normalize)


def wav2vec2_flops(config: dict[str, Any], num_samples: int) -> int:
    """Forward FLOPs (2 × multiply-accumulates) of a Wav2Vec2Model on `num_samples` 16 kHz samples.

    config: the model's config.json as a dict (wav2vec2-base defaults for missing keys). Counts the
    convolutional feature extractor, the feature projection, the positional convolution and every
    transformer layer (attention scores included); norms and activations are not counted. For 5 s
    (one training window of Tp + T = 125 frames) wav2vec2-base needs ≈ 72 GFLOP, 24 of them in the
    convolutional front end.
    """
    dims = list(config.get("conv_dim", [512] * 7))
    kernels = list(config.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
    strides = list(config.get("conv_stride", [5, 2, 2, 2, 2, 2, 2]))
    d, inter = int(config.get("hidden_size", 768)), int(config.get("intermediate_size", 3072))
    layers = int(config.get("num_hidden_layers", 12))
    pos_k, pos_g = int(config.get("num_conv_pos_embeddings", 128)), int(config.get("num_conv_pos_embedding_groups", 16))
    flops, n, c_in = 0, num_samples, 1
    for c_out, k, s in zip(dims, kernels, strides):
        n = (n - k) // s + 1
        flops += 2 * n * c_out * c_in * k
        c_in = c_out
    flops += 2 * n * c_in * d  # feature projection
    flops += 2 * n * d * (d // pos_g) * pos_k  # grouped positional convolution
    flops += layers * (2 * n * 4 * d * d + 4 * n * n * d + 2 * n * 2 * d * inter)  # q, k, v, out; scores; FFN
    return flops


def encoder_flops_per_window(cfg: AudioEncoderConfig, frames: int) -> int:
    """Forward FLOPs of the frozen encoder for `frames` 25 fps frames of audio (mel: 0, negligible)."""
    if _get(cfg, "name") != "wav2vec2":
        return 0
    config = json.loads((_wav2vec2_dir(cfg) / "config.json").read_text())
    return wav2vec2_flops(config, frames * SAMPLES_PER_FRAME)


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """Attribute access that also works on an OmegaConf DictConfig of AudioEncoderConfig."""
    return getattr(cfg, key, default)


def audio_feature_shape(cfg: AudioEncoderConfig) -> tuple[int, int]:
    """(L, C) of the encoder's per-frame features, without loading weights (wav2vec2: config.json)."""
    name = _get(cfg, "name")
    if name == "mel":
        return 1, int(_get(cfg, "n_mels"))
    if name == "wav2vec2":
        d = _wav2vec2_dir(cfg)
        c = json.loads((d / "config.json").read_text())
        return int(c["num_hidden_layers"]), int(c["hidden_size"])
    raise ValueError(f"audio.name {name!r} is not one of ['mel', 'wav2vec2']")


def build_audio_encoder(cfg: AudioEncoderConfig) -> nn.Module:
    """The frozen encoder named by `cfg.name` (eval mode, no gradients); wav2vec2 reads its local files."""
    name = _get(cfg, "name")
    if name == "mel":
        enc: nn.Module = MelEncoder(cfg)
    elif name == "wav2vec2":
        enc = load_wav2vec2(cfg)
    else:
        raise ValueError(f"audio.name {name!r} is not one of ['mel', 'wav2vec2']")
    return enc.eval().requires_grad_(False)



# Every path encodes audio in windows of the same length, so a feature never depends on where a clip
# was cut: a training window is exactly one encoder window; a longer clip (precompute, generation) is
# covered by windows of that length advancing by context_frames − context_overlap frames (the last one
# aligned to the clip's end), each frame taken from the window it sits most centrally in. Memory stays
# bounded for any length; windows are encoded in batches of at most WINDOW_BATCH.
WINDOW_BATCH = 16


def window_plan(num_frames: int, context: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, lo, hi) per encoder window covering `num_frames` frames: the window is frames
    [start, start + context) and it supplies the features of frames [lo, hi), the ones nearer its centre
    than any other window's. One window [0, num_frames) if the clip is at most `context` frames."""
    if num_frames <= context:
        return [(0, 0, num_frames)]
    starts = list(range(0, num_frames - context + 1, context - overlap))
    if starts[-1] + context < num_frames:
        starts.append(num_frames - context)  # the last window ends at the clip's end
    bounds = [0, *[(a + b + context) // 2 for a, b in zip(starts, starts[1:])], num_frames]
    return [(s, lo, hi) for s, lo, hi in zip(starts, bounds, bounds[1:])]


@torch.no_grad()
def encode_windowed(encoder: nn.Module, wav: Tensor, num_frames: int, context: int, overlap: int) -> Tensor:
    """Float audio (B, S) in [−1, 1] at 16 kHz → features (B, num_frames, L, C), encoded in fixed windows.

    The audio is zero-padded (or cut) to num_frames · 640 samples. A clip of at most `context` frames is
    one window: exactly what the training step encodes.
    """
    hop = SAMPLES_PER_FRAME
    need = num_frames * hop
    wav = F.pad(wav[:, :need], (0, max(0, need - wav.shape[1])))  # (B, T·640)
    plan = window_plan(num_frames, context, overlap)
    if len(plan) == 1:
        return encoder(wav, num_frames).float()  # (B, T, L, C)
    b = wav.shape[0]
    pieces = torch.stack([wav[:, s * hop : (s + context) * hop] for s, _, _ in plan], dim=1)  # (B, W, context·640)
    flat = pieces.reshape(b * len(plan), context * hop)
    feats = torch.cat([encoder(flat[i : i + WINDOW_BATCH], context).float()
                       for i in range(0, flat.shape[0], WINDOW_BATCH)])  # (B·W, context, L, C)
    feats = feats.reshape(b, len(plan), context, *feats.shape[2:])
    out = [feats[:, i, lo - s : hi - s] for i, (s, lo, hi) in enumerate(plan)]  # (B, hi − lo, L, C) each
    return torch.cat(out, dim=1)  # (B, T, L, C)
