"""The synthetic world (docs/synthetic-world.md): a procedural talking head in the real 70-d motion space.

Every relation is a fixed, documented formula (docs/synthetic-world.md) so that learning can be
measured against it:

* audio: voiced syllables (harmonics of f0 through formant resonances, attack/decay envelopes,
  pauses) or, with ``singing``, sustained notes with vibrato; int16 at 16 kHz, T·640 samples;
* expression δ: mouth opening o[t] = MOUTH_GAIN · env[t] / ENV_REF (lag 0), where env is the
  per-frame RMS envelope (`models.audio.audio_envelope`); plus an emotion pattern scaled by intensity, blinks,
  and white noise;
* pose: Ornstein–Uhlenbeck walk around a per-clip rest pose, Gaussian-smoothed;
* video: the transformed keypoints drawn as a flat face at 256×256, 25 fps.

Clips are written with the ordinary `DatasetWriter`, so synthetic data passes the same contract
checks as real data. Everything is a pure function of (seed, clip index): the same seed gives
byte-identical shards, and clip ids contain the seed, so two seeds give disjoint train/val sets.

Shape legend: T frames (25 fps) · S = 640·T audio samples · K = 21 keypoints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from datamodules.contract import EMOTIONS, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, ClipSample, clip_meta, make_key
from models.audio import audio_envelope
from models.motion import LOWER_LIP_KP, NUM_KP, UPPER_LIP_KP

DATASET = "synth"
SYNTH_VERSION = 1

# ------------------------------------------------------------------------------------------------
# Constants of the world (docs/synthetic-world.md quotes every one of them)
# ------------------------------------------------------------------------------------------------

# Keypoint roles (indices into the 21 keypoints). Canonical coordinates: x right, y down, z toward
# the camera, face roughly inside [-0.5, 0.5]².
BROW_L_OUT, BROW_L_IN, BROW_R_IN, BROW_R_OUT = 0, 1, 2, 3
EYE_L_OUT, EYE_L_IN, EYE_L_UP, EYE_L_LO = 4, 5, 6, 7
EYE_R_IN, EYE_R_OUT, EYE_R_UP, EYE_R_LO = 8, 9, 10, 11
NOSE_BRIDGE, NOSE_TIP = 12, 13
MOUTH_L, MOUTH_R = 14, 15
JAW_L, CHIN, JAW_R = 16, 17, 18
UPPER_LIP, LOWER_LIP = UPPER_LIP_KP, LOWER_LIP_KP  # 19, 20

TEMPLATE_KP = np.array(
    [
        [-0.32, -0.30, 0.04], [-0.10, -0.32, 0.10], [0.10, -0.32, 0.10], [0.32, -0.30, 0.04],  # brows
        [-0.30, -0.18, 0.02], [-0.10, -0.18, 0.06], [-0.20, -0.215, 0.06], [-0.20, -0.145, 0.06],  # left eye
        [0.10, -0.18, 0.06], [0.30, -0.18, 0.02], [0.20, -0.215, 0.06], [0.20, -0.145, 0.06],  # right eye
        [0.00, -0.12, 0.14], [0.00, 0.06, 0.20],  # nose bridge, tip
        [-0.15, 0.22, 0.09], [0.15, 0.22, 0.09],  # mouth corners
        [-0.42, 0.12, -0.06], [0.00, 0.46, 0.04], [0.42, 0.12, -0.06],  # jaw left, chin, jaw right
        [0.00, 0.205, 0.12], [0.00, 0.235, 0.11],  # upper lip (19), lower lip (20)
    ],
    dtype=np.float64,
)  # (21, 3)
IDENTITY_WIDTH_RANGE = (0.92, 1.08)  # per-identity x scale of the template
IDENTITY_HEIGHT_RANGE = (0.92, 1.08)  # per-identity y scale
IDENTITY_KP_NOISE = 0.012  # std of per-identity per-coordinate offsets (lips: x and z only)

# Mouth: o[t] = MOUTH_GAIN · env[t] / ENV_REF; the upper lip rises by UPPER_SHARE·o, the lower lip
# drops by (1 − UPPER_SHARE)·o, the chin drops by CHIN_SHARE·o (all along canonical y, in δ).
ENV_REF = 0.2  # RMS envelope of loud speech (int16/32768 units)
MOUTH_GAIN = 0.10  # lip gap added at env = ENV_REF
UPPER_SHARE = 0.3
CHIN_SHARE = 0.5

EXP_NOISE = 0.002  # std of white Gaussian noise on every δ coordinate, every frame
BLINK_RATE_HZ = 0.3  # Poisson rate of blinks
BLINK_FRAMES = 5  # blink length (triangular profile, peak = 1 at the centre frame)
BLINK_DEPTH = 0.06  # upper lid moves down by BLINK_DEPTH·b[t], lower lid up by BLINK_DEPTH/3·b[t]

# Emotion intensity (MEAD levels 1..3) scales the pattern by 0.5 + 0.25·intensity (0.75, 1.0, 1.25).


def intensity_scale(intensity: float) -> float:
    """Multiplier of an emotion pattern at MEAD intensity 1..3: 0.5 + 0.25·intensity."""
    return 0.5 + 0.25 * float(intensity)


def _pattern(moves: dict[int, tuple[float, float, float]]) -> np.ndarray:
    p = np.zeros((NUM_KP, 3))
    for k, v in moves.items():
        p[k] = v
    return p.reshape(-1)  # (63,)


# Per-emotion δ patterns at intensity 2 (scale 1.0), as keypoint displacements (dx, dy, dz).
EMOTION_PATTERNS: dict[str, np.ndarray] = {
    "neutral": _pattern({}),
    "angry": _pattern({  # inner brows down and together, eyes narrowed, lips pressed, corners down
        BROW_L_IN: (0.025, 0.045, 0), BROW_R_IN: (-0.025, 0.045, 0), BROW_L_OUT: (0, 0.015, 0),
        BROW_R_OUT: (0, 0.015, 0), EYE_L_UP: (0, 0.02, 0), EYE_R_UP: (0, 0.02, 0),
        UPPER_LIP: (0, 0.01, 0), MOUTH_L: (0, 0.015, 0), MOUTH_R: (0, 0.015, 0)}),
    "disgusted": _pattern({  # upper lip and nose raised, lower lids up, inner brows down
        UPPER_LIP: (0, -0.035, 0.01), NOSE_TIP: (0, -0.02, 0), EYE_L_LO: (0, -0.02, 0),
        EYE_R_LO: (0, -0.02, 0), BROW_L_IN: (0.01, 0.025, 0), BROW_R_IN: (-0.01, 0.025, 0),
        MOUTH_L: (-0.01, 0.01, 0), MOUTH_R: (0.01, 0.01, 0)}),
    "contempt": _pattern({  # one-sided smirk: right corner up and out, right brow slightly up
        MOUTH_R: (0.03, -0.04, 0), MOUTH_L: (0.0, 0.01, 0), BROW_R_OUT: (0, -0.02, 0),
        EYE_L_UP: (0, 0.01, 0)}),
    "fear": _pattern({  # brows up and together, eyes wide, mouth stretched, lips apart
        BROW_L_IN: (0.015, -0.045, 0), BROW_R_IN: (-0.015, -0.045, 0), BROW_L_OUT: (0, -0.02, 0),
        BROW_R_OUT: (0, -0.02, 0), EYE_L_UP: (0, -0.025, 0), EYE_R_UP: (0, -0.025, 0),
        MOUTH_L: (-0.035, 0.0, 0), MOUTH_R: (0.035, 0.0, 0), LOWER_LIP: (0, 0.015, 0)}),
    "happy": _pattern({  # corners up and out, cheeks push lower lids up
        MOUTH_L: (-0.035, -0.045, 0), MOUTH_R: (0.035, -0.045, 0), EYE_L_LO: (0, -0.015, 0),
        EYE_R_LO: (0, -0.015, 0), JAW_L: (-0.01, 0, 0), JAW_R: (0.01, 0, 0)}),
    "sad": _pattern({  # inner brows up, outer brows down, corners down, upper lids lowered
        BROW_L_IN: (0, -0.035, 0), BROW_R_IN: (0, -0.035, 0), BROW_L_OUT: (0, 0.025, 0),
        BROW_R_OUT: (0, 0.025, 0), MOUTH_L: (0, 0.045, 0), MOUTH_R: (0, 0.045, 0),
        EYE_L_UP: (0, 0.015, 0), EYE_R_UP: (0, 0.015, 0), CHIN: (0, -0.01, 0)}),
    "surprised": _pattern({  # all brows up, eyes wide, jaw dropped
        BROW_L_OUT: (0, -0.05, 0), BROW_L_IN: (0, -0.06, 0), BROW_R_IN: (0, -0.06, 0),
        BROW_R_OUT: (0, -0.05, 0), EYE_L_UP: (0, -0.03, 0), EYE_R_UP: (0, -0.03, 0),
        EYE_L_LO: (0, 0.01, 0), EYE_R_LO: (0, 0.01, 0), LOWER_LIP: (0, 0.04, 0), CHIN: (0, 0.05, 0)}),
}
assert tuple(EMOTION_PATTERNS) == tuple(EMOTIONS)  # one pattern per label, in label order

# Pose: angle[t] = rest + smooth(OU)[t]; OU with time constant POSE_TAU_S and stationary std
# POSE_WALK_STD; smoothed by a Gaussian of POSE_SMOOTH_FRAMES (std, frames), then clipped to rest ±
# POSE_MAX_DEV. Order: pitch, yaw, roll (deg), tx, ty, tz, scale.
REST_POSE_RANGE = np.array([10.0, 15.0, 5.0, 0.03, 0.03, 0.0, 0.05])  # rest ~ U(−r, r) (scale: 1 ± r)
POSE_WALK_STD = np.array([3.0, 5.0, 2.0, 0.01, 0.01, 0.0, 0.01])
POSE_TAU_S = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 2.0])
POSE_SMOOTH_FRAMES = 2.0
POSE_MAX_DEV = 4.0 * POSE_WALK_STD

# Audio
AUDIO_PEAK = 0.6  # the waveform is scaled so max |x| = AUDIO_PEAK (in [−1, 1] units)
NOISE_FLOOR = 0.002  # white noise std added everywhere (after peak scaling)
VOWELS = {  # formant centres (Hz) and bandwidths (Hz) of five vowels
    "a": ((730, 1090, 2440), (90, 110, 170)),
    "e": ((530, 1840, 2480), (70, 100, 150)),
    "i": ((270, 2290, 3010), (60, 100, 150)),
    "o": ((570, 840, 2410), (80, 90, 150)),
    "u": ((300, 870, 2240), (60, 90, 140)),
}
MAX_HARMONIC_HZ = 5000.0

# Video
IMAGE_SIZE = 256
PIXELS_PER_UNIT = 150.0  # pixel = 128 + PIXELS_PER_UNIT · (x, y)


# ------------------------------------------------------------------------------------------------
# Identity
# ------------------------------------------------------------------------------------------------


@dataclass
class Identity:
    """A synthetic speaker: canonical keypoints, voice and colours."""

    index: int
    kp: np.ndarray  # (21, 3) float32 canonical keypoints x_c
    f0: float  # base fundamental frequency (Hz)
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    lips: tuple[int, int, int]
    brows: tuple[int, int, int]


def make_identity(seed: int, index: int) -> Identity:
    """Identity `index` of the world with `seed`: template × (width, height) + per-coordinate offsets."""
    rng = np.random.default_rng([seed, 1, index])
    scale = np.array([rng.uniform(*IDENTITY_WIDTH_RANGE), rng.uniform(*IDENTITY_HEIGHT_RANGE), 1.0])
    offsets = rng.normal(0.0, IDENTITY_KP_NOISE, size=(NUM_KP, 3))
    offsets[[UPPER_LIP, LOWER_LIP], 1] = 0.0  # keep the rest lip gap of the template
    kp = TEMPLATE_KP * scale + offsets  # (21, 3)

    def colour(lo: int, hi: int) -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(lo, hi, size=3))

    return Identity(
        index=index,
        kp=kp.astype(np.float32),
        f0=float(rng.uniform(95.0, 230.0)),
        skin=colour(140, 250),
        background=colour(10, 90),
        lips=(int(rng.integers(120, 200)), int(rng.integers(20, 70)), int(rng.integers(30, 80))),
        brows=colour(20, 90),
    )


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


def _voiced(rng: np.random.Generator, n: int, f0: np.ndarray, vowel: str) -> np.ndarray:
    """n samples of harmonics of a time-varying f0 (n,) through the vowel's formant resonances."""
    centres, widths = VOWELS[vowel]
    phase = 2.0 * math.pi * np.cumsum(f0) / SAMPLE_RATE + rng.uniform(0, 2 * math.pi)  # (n,)
    f_mean = float(f0.mean())
    k = np.arange(1, int(MAX_HARMONIC_HZ // (f_mean * 1.1)) + 1)  # (H,)
    gains = 0.03 + sum(np.exp(-0.5 * ((k * f_mean - c) / w) ** 2) for c, w in zip(centres, widths))
    gains = gains / k**0.5  # spectral tilt
    return (gains[:, None] * np.sin(k[:, None] * phase[None, :])).sum(0)  # (n,)


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    """Raised-cosine attack, flat sustain, exponential-like raised-cosine release (n,)."""
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a > 0:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, a))
    if r > 0:
        env[n - r :] *= (0.5 + 0.5 * np.cos(np.linspace(0, math.pi, r))) ** 2
    return env


def _speech_events(rng: np.random.Generator, total: int, f0: float) -> list[tuple[int, np.ndarray]]:
    """(start, samples) of syllables: 120–300 ms voiced, 20–90 ms gaps, 15% pauses of 250–700 ms."""
    out, pos = [], int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    while pos < total:
        n = int(rng.uniform(0.12, 0.30) * SAMPLE_RATE)
        glide = np.linspace(1.0, rng.uniform(0.85, 1.12), n) * f0 * rng.uniform(0.9, 1.15)
        x = _voiced(rng, n, glide, str(rng.choice(list(VOWELS))))
        x *= _envelope(n, int(rng.uniform(0.015, 0.04) * SAMPLE_RATE), int(rng.uniform(0.04, 0.1) * SAMPLE_RATE))
        if rng.random() < 0.5:  # consonant burst (fricative noise) at the onset
            b = int(0.03 * SAMPLE_RATE)
            x[:b] += rng.normal(0, 0.3, b) * _envelope(b, b // 4, b // 2)
        out.append((pos, x * rng.uniform(0.4, 1.0)))
        pos += n + int(rng.uniform(0.02, 0.09) * SAMPLE_RATE)
        if rng.random() < 0.15:
            pos += int(rng.uniform(0.25, 0.7) * SAMPLE_RATE)
    return out


def _singing_events(rng: np.random.Generator, total: int, f0: float) -> list[tuple[int, np.ndarray]]:
    """(start, samples) of notes: 0.4–1.2 s on a major scale, 5.5 Hz ±3% vibrato, breaths between."""
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    out, pos = [], int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    while pos < total:
        n = int(rng.uniform(0.4, 1.2) * SAMPLE_RATE)
        pitch = f0 * 2.0 ** (rng.choice(scale) / 12.0)
        t = np.arange(n) / SAMPLE_RATE
        vib = 1.0 + 0.03 * np.sin(2 * math.pi * 5.5 * t) * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
        x = _voiced(rng, n, pitch * vib, str(rng.choice(list(VOWELS))))
        x *= _envelope(n, int(0.06 * SAMPLE_RATE), int(0.12 * SAMPLE_RATE))
        out.append((pos, x * rng.uniform(0.5, 1.0)))
        pos += n + int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
        if rng.random() < 0.2:
            pos += int(rng.uniform(0.3, 0.6) * SAMPLE_RATE)
    return out


def _render_audio(rng: np.random.Generator, num_frames: int, f0: float, singing: bool) -> np.ndarray:
    """(T·640,) int16 waveform of speech or singing."""
    total = num_frames * SAMPLES_PER_FRAME
    x = np.zeros(total)
    events = (_singing_events if singing else _speech_events)(rng, total, f0)
    for start, seg in events:
        seg = seg[: total - start]
        x[start : start + seg.size] += seg
    peak = np.abs(x).max()
    x = x * (AUDIO_PEAK / peak if peak > 0 else 1.0) + rng.normal(0.0, NOISE_FLOOR, total)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)  # (S,)


def synth_audio(seconds: float, seed: int, singing: bool = False, f0: float | None = None) -> np.ndarray:
    """A standalone int16 16 kHz waveform of round(25·seconds)·640 samples (for generation tests)."""
    rng = np.random.default_rng([seed, 3])
    num_frames = max(1, round(seconds * FPS))
    return _render_audio(rng, num_frames, f0 or float(rng.uniform(95.0, 230.0)), singing)


# ------------------------------------------------------------------------------------------------
# Motion
# ------------------------------------------------------------------------------------------------


def mouth_expression(env: np.ndarray) -> np.ndarray:
    """(T,) envelope → (T, 63) mouth part of δ: o = MOUTH_GAIN·env/ENV_REF split over lips and chin."""
    o = MOUTH_GAIN * env / ENV_REF  # (T,)
    d = np.zeros((env.shape[0], NUM_KP, 3))
    d[:, UPPER_LIP, 1] = -UPPER_SHARE * o
    d[:, LOWER_LIP, 1] = (1.0 - UPPER_SHARE) * o
    d[:, CHIN, 1] = CHIN_SHARE * o
    return d.reshape(-1, NUM_KP * 3)  # (T, 63)


def emotion_expression(emotion: str | None, intensity: float | None) -> np.ndarray:
    """(63,) emotion part of δ: EMOTION_PATTERNS[emotion]·(0.5 + 0.25·intensity); zeros for None."""
    if emotion is None:
        return np.zeros(NUM_KP * 3)
    if emotion not in EMOTION_PATTERNS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {list(EMOTIONS)}")
    return EMOTION_PATTERNS[emotion] * intensity_scale(intensity or 1)


def blink_curve(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: Poisson blinks of BLINK_FRAMES frames (triangular)."""
    b = np.zeros(num_frames)
    half = BLINK_FRAMES // 2
    shape = 1.0 - np.abs(np.arange(-half, half + 1)) / (half + 1)  # (5,) peak 1
    n = rng.poisson(BLINK_RATE_HZ * num_frames / FPS)
    for c in rng.integers(0, num_frames, size=n):
        lo, hi = max(c - half, 0), min(c + half + 1, num_frames)
        b[lo:hi] = np.maximum(b[lo:hi], shape[lo - c + half : hi - c + half])
    return b


def blink_expression(b: np.ndarray) -> np.ndarray:
    """(T,) closure → (T, 63): upper lids down BLINK_DEPTH·b, lower lids up BLINK_DEPTH/3·b."""
    d = np.zeros((b.shape[0], NUM_KP, 3))
    d[:, [EYE_L_UP, EYE_R_UP], 1] = BLINK_DEPTH * b[:, None]
    d[:, [EYE_L_LO, EYE_R_LO], 1] = -BLINK_DEPTH / 3.0 * b[:, None]
    return d.reshape(-1, NUM_KP * 3)


def pose_walk(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Rest pose (7,) and pose track (T, 7): rest + clip(smooth(OU), ±POSE_MAX_DEV)."""
    rest = rng.uniform(-1.0, 1.0, size=7) * REST_POSE_RANGE
    rest[6] += 1.0  # scale around 1
    rho = np.exp(-1.0 / (POSE_TAU_S * FPS))  # (7,)
    step = POSE_WALK_STD * np.sqrt(1.0 - rho**2)
    eps = rng.normal(size=(num_frames, 7))
    dev = np.zeros((num_frames, 7))
    dev[0] = POSE_WALK_STD * eps[0]  # start in the stationary distribution
    for t in range(1, num_frames):
        dev[t] = rho * dev[t - 1] + step * eps[t]
    dev = gaussian_filter1d(dev, POSE_SMOOTH_FRAMES, axis=0, mode="nearest")
    dev = np.clip(dev, -POSE_MAX_DEV, POSE_MAX_DEV)
    return rest, rest + dev  # (7,), (T, 7)


def synth_motion(
    rng: np.random.Generator, env: np.ndarray, emotion: str | None, intensity: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """(T,) envelope → raw motion (T, 70) float32 and the latent facts (rest pose, blinks)."""
    t = env.shape[0]
    b = blink_curve(rng, t)
    exp = mouth_expression(env) + emotion_expression(emotion, intensity)[None] + blink_expression(b)
    exp = exp + rng.normal(0.0, EXP_NOISE, size=exp.shape)  # (T, 63)
    rest, pose = pose_walk(rng, t)
    motion = np.concatenate([exp, pose], axis=1).astype(np.float32)  # (T, 70)
    return motion, {"rest_pose": rest.tolist(), "blinks": int((np.diff(np.r_[0, b > 0.5].astype(int)) > 0).sum())}


# ------------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------------


def transform_np(kp_c: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """numpy twin of models.motion.transform_keypoints: (21, 3), (T, 70) → (T, 21, 3)."""
    import torch

    from models.motion import transform_keypoints

    with torch.no_grad():
        return transform_keypoints(torch.from_numpy(kp_c).double(), torch.from_numpy(motion).double()).numpy()


def draw_face(kp: np.ndarray, ident: Identity, size: int = IMAGE_SIZE) -> np.ndarray:
    """Driving keypoints (21, 3) → uint8 RGB (size, size, 3) flat face: head, eyes, brows, nose, mouth."""
    from PIL import Image, ImageDraw

    p = size / 2 + PIXELS_PER_UNIT * (size / IMAGE_SIZE) * kp[:, :2]  # (21, 2) pixels

    def pt(i: int) -> tuple[float, float]:
        return float(p[i, 0]), float(p[i, 1])

    img = Image.new("RGB", (size, size), ident.background)
    d = ImageDraw.Draw(img)
    chin = p[CHIN]
    tops = [p[k] + 0.9 * (p[k] - p[j]) for k, j in ((BROW_R_OUT, JAW_R), (BROW_L_OUT, JAW_L))]
    crown = (p[BROW_L_IN] + p[BROW_R_IN]) / 2 + 0.55 * ((p[BROW_L_IN] + p[BROW_R_IN]) / 2 - chin)
    head = [pt(JAW_L), pt(CHIN), pt(JAW_R), tuple(tops[0]), tuple(crown), tuple(tops[1])]
    d.polygon([(float(x), float(y)) for x, y in head], fill=ident.skin)
    for out, up, inn, lo in ((EYE_L_OUT, EYE_L_UP, EYE_L_IN, EYE_L_LO), (EYE_R_OUT, EYE_R_UP, EYE_R_IN, EYE_R_LO)):
        d.polygon([pt(out), pt(up), pt(inn), pt(lo)], fill=(250, 250, 250), outline=(40, 40, 40))
        c = (p[out] + p[inn]) / 2
        r = 0.3 * max(p[lo, 1] - p[up, 1], 0.0)
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(30, 30, 60))
    d.line([pt(BROW_L_OUT), pt(BROW_L_IN)], fill=ident.brows, width=4)
    d.line([pt(BROW_R_IN), pt(BROW_R_OUT)], fill=ident.brows, width=4)
    d.line([pt(NOSE_BRIDGE), pt(NOSE_TIP)], fill=tuple(int(0.7 * c) for c in ident.skin), width=3)
    d.polygon([pt(MOUTH_L), pt(UPPER_LIP), pt(MOUTH_R), pt(LOWER_LIP)], fill=(60, 10, 20), outline=ident.lips)
    d.line([pt(MOUTH_L), pt(UPPER_LIP), pt(MOUTH_R)], fill=ident.lips, width=3)
    d.line([pt(MOUTH_L), pt(LOWER_LIP), pt(MOUTH_R)], fill=ident.lips, width=3)
    return np.asarray(img, dtype=np.uint8)


def render_frames(kp_c: np.ndarray, motion: np.ndarray, look: Identity, size: int = IMAGE_SIZE) -> np.ndarray:
    """Canonical kp (21, 3) + raw motion (T, 70) → uint8 RGB frames (T, size, size, 3) of the flat face,
    in the colours of `look`. Any motion renders, not only the world's own: `playmate generate`,
    validation, evaluation and the demo draw generated motion with it."""
    kp_d = transform_np(np.asarray(kp_c, dtype=np.float32), np.asarray(motion, dtype=np.float32))  # (T, 21, 3)
    if kp_d.shape[0] == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([draw_face(k, look, size) for k in kp_d])  # (T, size, size, 3)


def render_video(kp_c: np.ndarray, motion: np.ndarray, ident: Identity) -> bytes:
    """Canonical kp (21, 3) + motion (T, 70) → 256×256 25 fps H.264 mp4 bytes (no audio track)."""
    from datamodules.video import encode_mp4

    return encode_mp4(render_frames(kp_c, motion, ident), fps=FPS)


# ------------------------------------------------------------------------------------------------
# Clips and datasets
# ------------------------------------------------------------------------------------------------


def clip_plan(seed: int, clips: int, emotions: bool, identities: int | None) -> list[dict[str, Any]]:
    """Per-clip identity, emotion and intensity: identity i mod K; emotion cycles EMOTIONS."""
    k = identities or max(1, math.ceil(clips / 4))
    rng = np.random.default_rng([seed, 2])
    plan = []
    for i in range(clips):
        emotion = EMOTIONS[i % len(EMOTIONS)] if emotions else None
        intensity = None if emotion is None else (1 if emotion == "neutral" else int(rng.integers(1, 4)))
        plan.append({"index": i, "identity": i % k, "emotion": emotion, "intensity": intensity})
    return plan


def synthesize_clip(
    seed: int,
    index: int,
    identity: int = 0,
    emotion: str | None = None,
    intensity: float | None = None,
    singing: bool = False,
    min_seconds: float = 6.0,
    max_seconds: float = 10.0,
    video: bool = True,
) -> ClipSample:
    """Clip `index` of the world `seed`: audio → envelope → motion (→ video), as a contract ClipSample."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds ≤ max_seconds, got {min_seconds}, {max_seconds}")
    ident = make_identity(seed, identity)
    rng = np.random.default_rng([seed, 0, index])
    num_frames = max(1, round(rng.uniform(min_seconds, max_seconds) * FPS))
    wav = _render_audio(rng, num_frames, ident.f0 * rng.uniform(0.95, 1.05), singing)  # (S,) int16
    env = audio_envelope(wav, num_frames).numpy()  # (T,) float64
    motion, facts = synth_motion(rng, env, emotion, intensity)
    clip_id = f"s{seed}_{index:06d}"
    meta = clip_meta(
        clip_id=clip_id, dataset=DATASET, speaker_id=f"s{seed}_id{identity:04d}", motion=motion,
        source=f"synthetic world v{SYNTH_VERSION} (seed {seed})", emotion=emotion, intensity=intensity,
        synth={"seed": seed, "index": index, "identity": identity, "style": "singing" if singing else "speech",
               **facts},
    )
    mp4 = render_video(ident.kp, motion, ident) if video else None
    return ClipSample(make_key(DATASET, clip_id), motion, ident.kp, wav, meta, mp4=mp4)


def synthesize_dataset(
    out_dir: str | Path,
    clips: int,
    seed: int = 0,
    emotions: bool = False,
    singing: bool = False,
    min_seconds: float = 6.0,
    max_seconds: float = 10.0,
    identities: int | None = None,
    video: bool = True,
    maxcount: int = 64,
) -> dict[str, Any]:
    """Write `clips` synthetic clips to `out_dir` as contract shards; returns the manifest."""
    from datamodules.shards import MANIFEST, DatasetWriter

    if clips < 1:
        raise ValueError(f"clips must be ≥ 1, got {clips}")
    if identities is not None and identities < 1:
        raise ValueError(f"identities must be ≥ 1, got {identities}")
    settings = {"clips": clips, "seed": seed, "emotions": emotions, "singing": singing, "min_seconds": min_seconds,
                "max_seconds": max_seconds, "identities": identities, "video": video}
    provenance = {"made_by": "playmate synth", "synth_version": SYNTH_VERSION, **settings}
    writer = DatasetWriter(out_dir, f"{DATASET}-s{seed}", maxcount=maxcount, provenance=provenance)
    with writer:
        for p in clip_plan(seed, clips, emotions, identities):
            writer.write(synthesize_clip(seed, p["index"], p["identity"], p["emotion"], p["intensity"], singing,
                                         min_seconds, max_seconds, video))
    return json.loads((Path(out_dir) / MANIFEST).read_text())
