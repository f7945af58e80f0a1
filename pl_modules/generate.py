"""Generation: audio + reference (+ emotion, pose mode) → raw motion (N, 70), optionally a video (DESIGN §7).

    wav (any container/codec/rate) ─► mono 16 kHz, N = round(duration·25) frames, N·640 samples
        ─► frozen audio encoder (the checkpoint's `audio` section) ─► (1, N, L, C)
    reference (.npz motion + keypoints, or a portrait image through the face model's M)
        ─► f_id = [x_c | reference motion normalised with its own pose as the pose mean]
    generate_windowed (T-frame windows, each conditioned on the previous window's last Tp frames;
        nested CFG when an emotion is given) ─► normalised (N, 70)
        ─► de-normalised with pose mean = the reference pose (DESIGN §4) ─► pose mode ─► (N, 70)

Pose modes (method.md §1.1 step 5, §8 #20): `generated` keeps the DiT's pose; `fixed` holds the
reference pose; `driving` takes the pose of a driving motion file relative to its first frame and
applies it to the reference pose; `spin` follows `spin_offsets`, a fixed smooth yaw/pitch path
around the reference pose. Expression is always the generated one.

Shape legend: N frames · L encoder layers · C encoder channels · K = 21 keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from models.emotion import EMOTIONS
from models.motion import ANGLES, MOTION_DIM, NUM_KP, PITCH, POSE, SCALE, TRANS, YAW, MotionStats

POSE_MODES = ("generated", "fixed", "driving", "spin")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# `spin`: yaw sweeps ±SPIN_YAW_DEG once per SPIN_PERIOD_S while pitch nods ±SPIN_PITCH_DEG twice
# (a figure of eight), starting and ending at the reference pose; smooth (sinusoidal) everywhere.
SPIN_PERIOD_S = 6.0
SPIN_YAW_DEG = 20.0
SPIN_PITCH_DEG = 8.0
# The audio encoder runs on chunks of this many frames (with CONTEXT_FRAMES of audio either side),
# so memory stays bounded for arbitrarily long audio.
ENCODER_CHUNK_FRAMES = 1500  # 60 s
ENCODER_MARGIN_FRAMES = 25  # 1 s of audio context either side of a chunk, cut off afterwards


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


def wav_from_int16(wav: np.ndarray) -> np.ndarray:
    """int16 mono 16 kHz (S,) → float32 in [-1, 1] with round(S/640) whole frames."""
    wav = np.asarray(wav)
    if wav.dtype != np.int16 or wav.ndim != 1:
        raise GenerationError(f"audio array must be int16 mono 16 kHz (S,), got {wav.dtype} {wav.shape}")
    return fit_to_frames(wav.astype(np.float32) / 32768.0, round(len(wav) / SAMPLES_PER_FRAME))


def fit_to_frames(wav: np.ndarray, frames: int) -> np.ndarray:
    """Pad with zeros or trim (S,) to exactly frames·640 samples."""
    if frames < 1:
        raise GenerationError(f"audio is shorter than one 25 fps frame ({len(wav)} samples at 16 kHz)")
    n = frames * SAMPLES_PER_FRAME
    return np.pad(wav[:n], (0, max(0, n - len(wav))))


@torch.no_grad()
def encode_audio(encoder: torch.nn.Module, wav: np.ndarray, device: str | torch.device = "cpu") -> Tensor:
    """float32 (N·640,) → features (1, N, L, C), encoded in chunks with audio context at the seams."""
    n = len(wav) // SAMPLES_PER_FRAME
    x = torch.from_numpy(wav).to(device)[None]  # (1, N·640)
    out = []
    for start in range(0, n, ENCODER_CHUNK_FRAMES):
        stop = min(start + ENCODER_CHUNK_FRAMES, n)
        lo, hi = max(0, start - ENCODER_MARGIN_FRAMES), min(n, stop + ENCODER_MARGIN_FRAMES)
        feats = encoder(x[:, lo * SAMPLES_PER_FRAME : hi * SAMPLES_PER_FRAME], hi - lo)  # (1, hi-lo, L, C)
        out.append(feats[:, start - lo : stop - lo].float())  # (1, stop-start, L, C)
    return torch.cat(out, dim=1)  # (1, N, L, C)


def build_encoder(config: dict[str, Any], model_config: Any, checkpoint: str) -> torch.nn.Module:
    """The checkpoint's frozen audio encoder; its (L, C) must match what the DiT was trained on."""
    from models.audio import AudioEncoderConfig, build_audio_encoder

    try:
        encoder = build_audio_encoder(AudioEncoderConfig(**config.get("audio", {}))).eval()
    except (TypeError, ValueError, OSError) as e:
        raise GenerationError(f"{checkpoint}: cannot build its audio encoder {config.get('audio')}: {e}") from None
    probe = encoder(torch.zeros(1, 4 * SAMPLES_PER_FRAME), 4)  # (1, 4, L, C)
    got, want = tuple(probe.shape[2:]), (model_config.audio_layers, model_config.audio_dim)
    if got != want:
        raise GenerationError(
            f"{checkpoint}: the DiT expects audio features of (layers, dim) = {want} but the configured audio "
            f"encoder {config.get('audio', {}).get('name')!r} gives {got}; the checkpoint's audio and model "
            "sections disagree (was it trained with another encoder?)"
        )
    return encoder.requires_grad_(False)


# ------------------------------------------------------------------------------------------------
# Reference and driving motion
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
    with np.load(p) as z:
        if "motion" not in z or "kp" not in z:
            raise GenerationError(f"reference {p} must hold arrays `motion` (70,) or (T, 70) and `kp` (21, 3); "
                                  f"it has {sorted(z.files)}")
        motion, kp = z["motion"].astype(np.float32), z["kp"].astype(np.float32)
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


def load_driving(path: str | Path) -> Tensor:
    """Driving motion: .npy (T, 70), or .npz with `motion` (T, 70) (e.g. a shard's motion.npy) → (T, 70)."""
    p = Path(path)
    if not p.is_file():
        raise GenerationError(f"driving motion {p} does not exist")
    try:
        arr = np.load(p)
        if isinstance(arr, np.lib.npyio.NpzFile):
            with arr:
                arr = arr["motion"]
    except (ValueError, KeyError, OSError) as e:
        raise GenerationError(f"cannot read driving motion {p} (.npy (T, 70) or .npz with `motion`): {e}") from None
    if arr.ndim != 2 or arr.shape[1] != MOTION_DIM or len(arr) == 0:
        raise GenerationError(f"driving motion {p} has shape {arr.shape}, expected (T, {MOTION_DIM})")
    return torch.from_numpy(arr.astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Pose modes
# ------------------------------------------------------------------------------------------------


def spin_offsets(num_frames: int, fps: int = FPS) -> Tensor:
    """The `spin` path: (N, 2) offsets in degrees of (pitch, yaw) from the reference pose.

    yaw = 20°·sin(2πt/6 s), pitch = 8°·sin(4πt/6 s): a figure of eight, zero at t = 0.
    """
    t = torch.arange(num_frames, dtype=torch.float32) / fps  # (N,) seconds
    phase = 2 * math.pi * t / SPIN_PERIOD_S
    return torch.stack([SPIN_PITCH_DEG * torch.sin(2 * phase), SPIN_YAW_DEG * torch.sin(phase)], dim=-1)


def check_pose_mode(mode: str, driving: Tensor | None) -> None:
    if mode not in POSE_MODES:
        raise GenerationError(f"pose mode {mode!r} is not one of {POSE_MODES}")
    if mode == "driving" and driving is None:
        raise GenerationError("pose mode 'driving' needs a driving motion file (--driving FILE.npy)")
    if mode != "driving" and driving is not None:
        raise GenerationError(f"a driving motion was given but pose mode is {mode!r}; use --pose-mode driving")


def apply_pose_mode(motion: Tensor, ref_motion: Tensor, mode: str, driving: Tensor | None = None) -> Tensor:
    """Raw motion (N, 70) → (N, 70) with the pose (63:70) replaced as `mode` says; expression untouched.

    driving (T, 70): angles and translation are the reference's plus the driving change since its
    first frame, scale the reference's times the driving ratio; frames past T hold the last pose.
    """
    check_pose_mode(mode, driving)
    out = motion.clone()
    n = len(motion)
    if mode == "generated":
        return out
    out[:, POSE] = ref_motion[POSE]  # fixed: the reference pose on every frame
    if mode == "spin":
        off = spin_offsets(n)  # (N, 2)
        out[:, PITCH] += off[:, 0]
        out[:, YAW] += off[:, 1]
    elif mode == "driving":
        idx = torch.arange(n).clamp(max=len(driving) - 1)
        drv = driving[idx]  # (N, 70)
        for part in (ANGLES, TRANS):  # angles (deg) and translation: relative change
            out[:, part] += drv[:, part] - driving[0, part]
        out[:, SCALE] *= drv[:, SCALE] / driving[0, SCALE]  # scale: relative ratio
    return out


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------


def emotion_index(name: str | None) -> int | None:
    """Emotion name (case-insensitive) → label index; unknown names list the valid ones."""
    if name is None:
        return None
    key = name.strip().lower()
    if key not in EMOTIONS:
        raise GenerationError(f"unknown emotion {name!r}; valid emotions: {', '.join(EMOTIONS)}")
    return EMOTIONS.index(key)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict, MotionStats]:
    """load_motion_model with its errors as GenerationError naming the checkpoint."""
    from pl_modules.checkpoints import load_motion_model

    try:
        model, config, stats = load_motion_model(checkpoint)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        raise GenerationError(f"cannot load checkpoint {checkpoint}: {e}") from None
    return model.to(device), config, stats


def reference_id_feat(reference: Reference, stats: MotionStats) -> Tensor:
    """f_id (1, 133): x_c and the reference motion normalised with its own pose as the pose mean (pose → 0)."""
    from models.dit import reference_id_feat as id_feat

    return id_feat(reference.kp[None], reference.motion[None], stats)  # (1, 133)


@torch.no_grad()
def generate_motion(
    checkpoint: str | Path,
    audio: str | Path | np.ndarray,
    reference: str | Path | Reference,
    emotion: str | None = None,
    pose_mode: str = "generated",
    driving: str | Path | Tensor | None = None,
    steps: int | None = None,
    w_a: float | None = None,
    w_e: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    face_model: Any = None,
    loaded: tuple[Any, dict, MotionStats] | None = None,
) -> np.ndarray:
    """Raw motion (N, 70) float32, N = round(audio duration · 25).

    audio: a file path (any format PyAV decodes) or int16 mono 16 kHz samples. reference: a .npz,
    an image (with `face_model`), or a `Reference`. steps / w_a / w_e default to the checkpoint's
    diffusion section. `loaded` reuses a (model, config, stats) from `load_model`.
    """
    from models.diffusion import NoiseSchedule, generate_windowed
    from models.diffusion.schedule import DiffusionConfig
    from models.motion import denormalize_motion

    label = emotion_index(emotion)  # validate the cheap inputs before loading anything heavy
    drv = load_driving(driving) if isinstance(driving, (str, Path)) else driving
    check_pose_mode(pose_mode, drv)
    ref = reference if isinstance(reference, Reference) else load_reference(reference, face_model)
    model, config, stats = loaded or load_model(checkpoint, device)
    if label is not None and model.emotion_controller is None:
        raise GenerationError(
            f"{checkpoint}: this checkpoint has no emotion controller (a stage-one model); "
            "drop --emotion or use a stage-two checkpoint"
        )
    wav = wav_from_int16(audio) if isinstance(audio, np.ndarray) else load_audio(audio)
    n = len(wav) // SAMPLES_PER_FRAME
    feats = encode_audio(build_encoder(config, model.config, str(checkpoint)).to(device), wav, device)

    d = DiffusionConfig(**config.get("diffusion", {}))
    c = model.config
    gen = torch.Generator(device).manual_seed(seed)
    x = generate_windowed(
        model, NoiseSchedule.from_config(d), feats, reference_id_feat(ref, stats).to(device), c.t_window, c.tp,
        num_frames=n, emotion=None if label is None else torch.tensor([label], device=device),
        sampler=d.sampler, steps=steps or d.sampling_steps, eta=d.eta, w_a=d.w_a if w_a is None else w_a,
        w_e=None if label is None else (d.w_e if w_e is None else w_e), generator=gen,
    )  # (1, N, 70) normalised
    raw = denormalize_motion(x[0].float().cpu(), stats, ref.motion[POSE])  # (N, 70)
    return apply_pose_mode(raw, ref.motion, pose_mode, drv).numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------


def boundary_continuity(motion: np.ndarray | Tensor, t_window: int) -> dict[str, float]:
    """Frame-to-frame change |m[k] − m[k−1]|₂ at window boundaries (k = T, 2T, …) vs inside windows.

    Returns max/mean at boundaries, max/mean/p99 inside windows; meaningful on normalised motion
    (per-dimension z-scores) so that expression and pose weigh alike.
    """
    m = torch.as_tensor(motion, dtype=torch.float32)
    step = (m[1:] - m[:-1]).norm(dim=-1)  # (N-1,): step[k-1] is the change into frame k
    k = torch.arange(1, len(m))
    at = k % t_window == 0
    if not at.any() or at.all():
        raise ValueError(f"need more than one window of {t_window} frames, got {len(m)} frames")
    inside = step[~at]
    return {
        "boundary_max": step[at].max().item(),
        "boundary_mean": step[at].mean().item(),
        "within_max": inside.max().item(),
        "within_mean": inside.mean().item(),
        "within_p99": inside.quantile(0.99).item(),
        "boundaries": int(at.sum()),
    }
