"""Inputs of generation: audio files, the reference identity, driving motion, emotion names.

Every reader turns a bad file into one `GenerationError` line naming the file and what was expected.

Shape legend: N frames (25 fps) · S = 640·N audio samples (16 kHz) · K = 21 keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.clock import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from models.emotion import EMOTIONS
from models.motion import MOTION_DIM, NUM_KP

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class GenerationError(ValueError):
    """Bad input to generation (audio, reference, emotion, pose mode, checkpoint): one clear line."""


@dataclass
class Reference:
    """The identity to animate: its raw motion (70,), canonical keypoints x_c (21, 3), and its crop if known."""

    motion: Tensor  # (70,) raw: exp 63 · pitch, yaw, roll (deg) · t (3) · scale
    kp: Tensor  # (21, 3)
    image: np.ndarray | None = None  # uint8 (256, 256, 3) source crop (for rendering)


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


def load_audio(path: str | Path) -> np.ndarray:
    """Any audio (or video-with-audio) file PyAV reads → float32 mono 16 kHz in [-1, 1], (S,).

    The result has exactly round(duration·25)·640 samples, duration from the source's own sample
    count and rate (resampler delay does not change the frame count).
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise GenerationError(f"audio file {p} does not exist")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise GenerationError(f"audio file {p} has no audio stream")
            stream = container.streams.audio[0]
            # Planar float at 16 kHz in the source's channel layout; channels are averaged below
            # (FFmpeg's own downmix sums channels, which clips multi-channel audio).
            resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
            chunks, n_src, src_rate = [], 0, None
            for frame in container.decode(stream):
                n_src += frame.samples
                src_rate = src_rate or frame.sample_rate
                chunks += [f.to_ndarray().mean(axis=0) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().mean(axis=0) for f in resampler.resample(None)]
    except av.FFmpegError as e:
        raise GenerationError(f"cannot read audio file {p}: {e} (give a wav/mp3/aac/flac/m4a/mp4 file)") from None
    if n_src == 0:
        raise GenerationError(f"audio file {p} decodes to no samples")
    wav = np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32)
    return fit_to_frames(wav, round(n_src / src_rate * FPS))


def wav_from_array(wav: np.ndarray) -> np.ndarray:
    """Mono 16 kHz samples (S,), int16 or float in [-1, 1] → float32 with round(S/640) whole frames."""
    wav = np.asarray(wav)
    if wav.ndim != 1 or not (wav.dtype == np.int16 or np.issubdtype(wav.dtype, np.floating)):
        raise GenerationError("audio array must be mono 16 kHz samples (S,), int16 or float; "
                              f"got {wav.dtype} {wav.shape}")
    x = wav.astype(np.float32) / 32768.0 if wav.dtype == np.int16 else wav.astype(np.float32)
    if not np.isfinite(x).all():
        raise GenerationError("audio array contains non-finite samples")
    return fit_to_frames(x, round(len(x) / SAMPLES_PER_FRAME))


def fit_to_frames(wav: np.ndarray, frames: int) -> np.ndarray:
    """Pad with zeros or trim (S,) to exactly frames·640 samples."""
    if frames < 1:
        raise GenerationError(f"audio is shorter than one 25 fps frame ({len(wav)} samples at 16 kHz)")
    n = frames * SAMPLES_PER_FRAME
    return np.pad(wav[:n], (0, max(0, n - len(wav))))


def pcm_to_float(wav: np.ndarray | Tensor) -> Tensor:
    """int16 (…, S) → float32 in [-1, 1]; float input is returned as float32 unchanged."""
    x = torch.as_tensor(np.asarray(wav) if not isinstance(wav, Tensor) else wav)
    return x.float() / 32768.0 if x.dtype == torch.int16 else x.float()


# ------------------------------------------------------------------------------------------------
# Reference, driving motion, emotion
# ------------------------------------------------------------------------------------------------


def load_reference(path: str | Path, face_model: Any = None) -> Reference:
    """A reference .npz (`motion` (70,) or (T, 70), first frame used; `kp` (21, 3)) or a portrait image.

    Images need the face model (`face_model`, e.g. from `load_face_model`) to extract motion and x_c.
    """
    p = Path(path)
    if not p.is_file():
        raise GenerationError(f"reference {p} does not exist")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        if face_model is None:
            raise GenerationError(
                f"reference {p} is an image: extracting its motion needs the face model (--face-model DIR); "
                "or give a .npz with `motion` (70,) and `kp` (21, 3)"
            )
        crop = load_portrait(p)
        motion, kp = face_model.extract_motion(crop[None])  # (1, 70), (1, 21, 3)
        return Reference(motion[0].float(), kp[0].float(), crop)
    if p.suffix.lower() != ".npz":
        raise GenerationError(f"reference {p}: expected a .npz (motion, kp) or an image {IMAGE_SUFFIXES}")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "motion" not in z or "kp" not in z:
                raise GenerationError(f"reference {p} must hold arrays `motion` (70,) or (T, 70) and `kp` (21, 3); "
                                      f"it has {sorted(z.files)}")
            motion, kp = z["motion"].astype(np.float32), z["kp"].astype(np.float32)
    except GenerationError:
        raise
    except Exception as e:  # not an npz, pickled objects, truncated archive
        # numpy reads bytes that are not a zip archive as a pickle (and suggests allow_pickle): never
        why = "not an .npz archive" if "pickled" in str(e) else f"{type(e).__name__}: {e}"
        raise GenerationError(f"reference {p} is not a readable .npz of arrays ({why}); write it "
                              "with numpy.savez(motion=..., kp=...) or --save-reference") from None
    motion = motion[0] if motion.ndim == 2 else motion
    if motion.shape != (MOTION_DIM,) or kp.shape != (NUM_KP, 3):
        raise GenerationError(f"reference {p}: motion {motion.shape} / kp {kp.shape}, expected (70,) / (21, 3)")
    if not (np.isfinite(motion).all() and np.isfinite(kp).all()):
        raise GenerationError(f"reference {p} contains non-finite values")
    return Reference(torch.from_numpy(motion), torch.from_numpy(kp))


def save_reference(path: str | Path, reference: Reference) -> None:
    """Write the reference .npz format (`motion` (70,), `kp` (21, 3))."""
    np.savez(path, motion=reference.motion.numpy(), kp=reference.kp.numpy())


def load_portrait(path: str | Path, size: int = 256) -> np.ndarray:
    """Image → uint8 RGB (size, size, 3): centre square crop, resized. Give a face-centred portrait
    (a LivePortrait-style crop: face ≈ 40 % of the side); there is no face detector here."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise GenerationError(f"cannot read image {path}: {e}") from None
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.array(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)  # writable copy


def load_driving(path: str | Path, what: str = "driving motion") -> Tensor:
    """Driving (or ground-truth, `what`) motion: .npy (T, 70), or .npz with `motion` (T, 70) (e.g. a
    shard's motion.npy) → (T, 70)."""
    p = Path(path)
    if not p.is_file():
        raise GenerationError(f"{what} {p} does not exist")
    try:
        arr = np.load(p)
        if isinstance(arr, np.lib.npyio.NpzFile):
            with arr:
                arr = arr["motion"]
    except (ValueError, KeyError, OSError) as e:
        raise GenerationError(f"cannot read {what} {p} (.npy (T, 70) or .npz with `motion`): {e}") from None
    if arr.ndim != 2 or arr.shape[1] != MOTION_DIM or len(arr) == 0:
        raise GenerationError(f"{what} {p} has shape {arr.shape}, expected (T, {MOTION_DIM})")
    return torch.from_numpy(arr.astype(np.float32))


def emotion_index(name: str | None) -> int | None:
    """Emotion name (case-insensitive) → label index; unknown names list the valid ones."""
    if name is None:
        return None
    key = name.strip().lower()
    if key not in EMOTIONS:
        raise GenerationError(f"unknown emotion {name!r}; valid emotions: {', '.join(EMOTIONS)}")
    return EMOTIONS.index(key)
