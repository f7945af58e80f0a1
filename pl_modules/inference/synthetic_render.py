"""Watching motion without face-model weights: the synthetic world's procedural head draws any motion.

The drawing is `datamodules.synthetic.render_frames`, the same function that draws the world's own
clips (`playmate synth`), so a synthetic clip's ground truth and its generated motion are drawn alike.
Every frame carries the caption "synthetic-world renderer" so that nobody mistakes it for a face
model's output. Side by side: generated (left) | ground truth (right), each panel labelled.

Used by `playmate generate --video` without `--face-model`, validation (W&B video), the evaluation
report's videos and the demo.

Shape legend: N frames (25 fps) · S = 640·N samples (16 kHz) · P = panel side (256).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.synthetic import IMAGE_SIZE, Identity, make_identity, render_frames
from models.clock import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

CAPTION = "synthetic-world renderer"
# Colours for keypoints that are not one of the world's identities (e.g. a reference .npz of a real face).
NEUTRAL_LOOK = {"skin": (214, 176, 146), "background": (38, 46, 58), "lips": (168, 48, 60), "brows": (60, 42, 30)}


def look_for(kp_c: np.ndarray, meta: dict[str, Any] | None = None) -> Identity:
    """The colours to draw with: a synthetic clip's own identity (from its meta's `synth` seed and
    identity, so generated motion looks like the clip's video), else a neutral palette."""
    synth = (meta or {}).get("synth") or {}
    if "seed" in synth and "identity" in synth:
        return make_identity(int(synth["seed"]), int(synth["identity"]))
    return Identity(index=-1, kp=np.asarray(kp_c, np.float32), f0=0.0, **NEUTRAL_LOOK)


def _label(frames: np.ndarray, lines: list[str]) -> np.ndarray:
    """Write text lines on a dark band at the bottom of every frame (N, H, W, 3), in place."""
    from PIL import Image, ImageDraw

    if not len(frames):
        return frames
    h, w = frames.shape[1:3]
    band = Image.new("RGB", (w, 12 * len(lines) + 4), (0, 0, 0))
    d = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        d.text((4, 2 + 12 * i), line, fill=(235, 235, 235))
    band_px = np.asarray(band)
    frames[:, h - band_px.shape[0]:, :] = band_px  # the same band on every frame
    return frames


def synthetic_frames(kp_c: np.ndarray, motion: np.ndarray, look: Identity | None = None,
                     label: str | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Canonical kp (21, 3) + raw motion (N, 70) → uint8 (N, size, size, 3), captioned."""
    look = look if look is not None else look_for(kp_c)
    frames = render_frames(np.asarray(kp_c), np.asarray(motion), look, size)  # (N, P, P, 3)
    return _label(frames, [CAPTION] + ([label] if label else []))


def fit_motion(motion: np.ndarray, frames: int) -> np.ndarray:
    """(T, 70) → (frames, 70): cut, or hold the last frame (ground truth shorter than the audio)."""
    motion = np.asarray(motion)
    if len(motion) >= frames:
        return motion[:frames]
    return np.concatenate([motion, np.repeat(motion[-1:], frames - len(motion), axis=0)])


def side_by_side(kp_c: np.ndarray, generated: np.ndarray, truth: np.ndarray, look: Identity | None = None,
                 size: int = IMAGE_SIZE) -> np.ndarray:
    """Generated (N, 70) | ground truth (T, 70, fitted to N) → uint8 (N, size, 2·size, 3)."""
    n = len(generated)
    left = synthetic_frames(kp_c, generated, look, "generated", size)
    right = synthetic_frames(kp_c, fit_motion(truth, n), look, "ground truth", size)
    return np.concatenate([left, right], axis=2)  # (N, P, 2P, 3)


def to_pcm(wav: np.ndarray, frames: int) -> np.ndarray:
    """Mono 16 kHz audio (S,), int16 or float in [-1, 1] → int16 of exactly frames·640 samples."""
    wav = np.asarray(wav)
    x = wav if wav.dtype == np.int16 else (np.clip(wav.astype(np.float32), -1.0, 1.0) * 32767).astype(np.int16)
    n = frames * SAMPLES_PER_FRAME
    return np.pad(x[:n], (0, max(0, n - len(x))))


def write_synthetic_video(path: str | Path, kp_c: np.ndarray, motion: np.ndarray, wav: np.ndarray | None,
                          truth: np.ndarray | None = None, look: Identity | None = None,
                          size: int = IMAGE_SIZE) -> int:
    """Draw motion (N, 70) (| ground truth (T, 70) when given) and write a 25 fps mp4 with the audio
    (S,) muxed in (cut or padded to N·640 samples); returns the number of frames written (N)."""
    from datamodules.video import encode_mp4

    motion = np.asarray(motion, np.float32)
    if motion.ndim != 2 or len(motion) < 1:
        raise ValueError(f"motion to render must be (N ≥ 1, 70), got {motion.shape}")
    frames = (side_by_side(kp_c, motion, np.asarray(truth, np.float32), look, size) if truth is not None
              else synthetic_frames(kp_c, motion, look, None, size))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    audio = None if wav is None else to_pcm(wav, len(frames))
    encode_mp4(np.ascontiguousarray(frames), fps=FPS, audio=audio, sample_rate=SAMPLE_RATE, path=path)
    return len(frames)
