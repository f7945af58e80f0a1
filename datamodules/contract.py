"""The shard contract (docs/data-format.md): one WebDataset sample = one clip.

One validator (`validate_sample`) is used on write (the writer refuses a bad clip), on read (the
training pipeline skips and counts it) and by `playmate shards check`.

Members of a sample with key ``{dataset}-{clip_id}`` (no dots):

| member       | content                                                                            |
|--------------|------------------------------------------------------------------------------------|
| motion.npy   | float32 (T, 70) raw motion: exp δ 63 · pitch, yaw, roll (deg) · t 3 · scale 1       |
| kp.npy       | float32 (21, 3) canonical keypoints x_c of the clip's identity (reference frame)    |
| wav          | 16 kHz mono 16-bit PCM WAV, exactly T·640 samples                                  |
| audio.npy    | optional float16 (T, L, C) precomputed audio-encoder features at 25 fps             |
| mp4          | optional 256×256 25 fps face crop with T frames                                    |
| json         | metadata (`REQUIRED_META`)                                                         |
| sha256       | json {member: sha256 hex} of every other member: detects corrupted bytes per sample  |

Arrays are stored with ``np.save`` and read with ``allow_pickle=False``: nothing in a shard is ever
unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.clock import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from models.emotion import EMOTIONS  # the 8 labels; a clip without a label stores null
from models.motion import (
    ANGLE_LIMIT_DEG,
    ANGLES,
    EXP,
    EXP_LIMIT,
    MOTION_DIM,
    NUM_KP,
    POSE_DIM,
    SCALE,
    SCALE_RANGE,
    TRANS,
    TRANS_LIMIT,
)

SCHEMA_VERSION = 1

REQUIRED_MEMBERS = ("motion.npy", "kp.npy", "wav", "json", "sha256")
REQUIRED_META = {
    "clip_id": str,
    "dataset": str,
    "speaker_id": str,
    "fps": int,
    "num_frames": int,
    "sample_rate": int,
    "emotion": (str, type(None)),
    "intensity": (int, float, type(None)),
    "source": str,
    "crop_box": (list, type(None)),
    "pose_mean": list,
    "pose_std": list,
    "schema_version": int,
}
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class ContractError(ValueError):
    """A sample breaks the shard contract; the message names the shard, the key and each problem."""


@dataclass
class ClipSample:
    """One clip in memory, before encoding (what writers and the synthetic world produce)."""

    key: str
    motion: np.ndarray  # (T, 70) float32
    kp: np.ndarray  # (21, 3) float32
    wav: np.ndarray  # (T·640,) int16
    meta: dict[str, Any]
    mp4: bytes | None = None
    audio_feats: np.ndarray | None = None  # (T, L, C) float16
    extra: dict[str, bytes] = field(default_factory=dict)


def make_key(dataset: str, clip_id: str) -> str:
    """`{dataset}-{clip_id}` with every character outside [A-Za-z0-9_-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", f"{dataset}-{clip_id}")


def clip_meta(
    *,
    clip_id: str,
    dataset: str,
    speaker_id: str,
    motion: np.ndarray,
    source: str,
    emotion: str | None = None,
    intensity: float | None = None,
    crop_box: list[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The json member for a clip, with the pose mean/std computed from its motion."""
    meta = {
        "clip_id": clip_id,
        "dataset": dataset,
        "speaker_id": speaker_id,
        "fps": FPS,
        "num_frames": int(motion.shape[0]),
        "sample_rate": SAMPLE_RATE,
        "emotion": emotion,
        "intensity": intensity,
        "source": source,
        "crop_box": crop_box,
        **pose_statistics(motion),
        "schema_version": SCHEMA_VERSION,
    }
    meta.update(extra)
    return meta


def pose_statistics(motion: np.ndarray) -> dict[str, list[float]]:
    """The json fields pose_mean and pose_std (7 each) of a clip's raw motion (T, 70)."""
    pose = motion[:, MOTION_DIM - POSE_DIM :].astype(np.float64)
    return {"pose_mean": pose.mean(0).tolist(), "pose_std": pose.std(0).tolist()}


# ------------------------------------------------------------------------------------------------
# Encoding and decoding of members
# ------------------------------------------------------------------------------------------------


def encode_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


# The header numpy's `np.save` writes for a plain little-endian array (format 1.0); anything else
# (another version, dtype or Fortran order) goes through np.load.
_NPY_HEADER = re.compile(rb"\{'descr': '(<f4|<f2|<i2|\|u1)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n")


def decode_npy(b: bytes) -> np.ndarray:
    """npy bytes → a (writable) array; never unpickles (object arrays are refused)."""
    if b[:8] == b"\x93NUMPY\x01\x00" and len(b) >= 10:
        end = 10 + int.from_bytes(b[8:10], "little")
        m = _NPY_HEADER.fullmatch(b, 10, end)
        if m is not None:
            shape = tuple(int(d) for d in m.group(2).split(b",") if d.strip())
            dtype = np.dtype(m.group(1).decode())
            if len(b) - end == math.prod(shape) * dtype.itemsize:
                return np.frombuffer(b, dtype, offset=end).reshape(shape).copy()
    return np.load(io.BytesIO(b), allow_pickle=False)


def encode_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """int16 mono samples → WAV bytes (16-bit PCM)."""
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"wav samples must be 1-D int16, got {samples.dtype} {samples.shape}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF, fmt chunk of 16 bytes, data chunk header


def decode_wav(b: bytes) -> tuple[np.ndarray, int, int]:
    """WAV bytes → (int16 samples of channel 0 interleaved as stored, sample_rate, channels)."""
    if len(b) >= _WAV_HEADER.size:  # the canonical 44-byte header `encode_wav` writes; others via `wave`
        riff, _, wave_id, fmt, fmt_size, tag, channels, rate, _, align, bits, data_id, n = _WAV_HEADER.unpack_from(b)
        if (riff, wave_id, fmt, fmt_size, tag, bits, data_id) == (b"RIFF", b"WAVE", b"fmt ", 16, 1, 16, b"data") \
                and channels >= 1 and align == 2 * channels and n % align == 0 and len(b) >= _WAV_HEADER.size + n:
            start = _WAV_HEADER.size
            return np.frombuffer(b, "<i2", n // 2, start).astype(np.int16), rate, channels
    with wave.open(io.BytesIO(b), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"wav is {8 * w.getsampwidth()}-bit, the contract requires 16-bit PCM")
        rate, channels, n = w.getframerate(), w.getnchannels(), w.getnframes()
        data = np.frombuffer(w.readframes(n), dtype="<i2").astype(np.int16)
    return data, rate, channels


def encode_sample(s: ClipSample) -> dict[str, Any]:
    """ClipSample → the dict a WebDataset TarWriter writes (all values already bytes)."""
    out: dict[str, Any] = {
        "__key__": s.key,
        "motion.npy": encode_npy(np.ascontiguousarray(s.motion, dtype=np.float32)),
        "kp.npy": encode_npy(np.ascontiguousarray(s.kp, dtype=np.float32)),
        "wav": encode_wav(s.wav),
        "json": json.dumps(s.meta, sort_keys=True).encode(),
    }
    if s.audio_feats is not None:
        out["audio.npy"] = encode_npy(np.ascontiguousarray(s.audio_feats, dtype=np.float16))
    if s.mp4 is not None:
        out["mp4"] = s.mp4
    out.update(s.extra)
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in out.items() if k != "__key__"}
    out["sha256"] = json.dumps(digests, sort_keys=True).encode()
    return out


def verify_digests(raw: dict[str, Any], members: tuple[str, ...] | None = None) -> list[str]:
    """Members whose bytes do not match the sample's recorded sha256 (all recorded ones by default)."""
    digests = json.loads(raw["sha256"])
    names = digests.keys() if members is None else [m for m in members if m in digests]
    bad = [m for m in names if m not in raw or hashlib.sha256(raw[m]).hexdigest() != digests[m]]
    present = [*raw, *raw.get("__skipped__", ())]  # members a reader skipped are still part of the sample
    unrecorded = [m for m in present if not m.startswith("__") and m != "sha256" and m not in digests]
    return bad + unrecorded


DECODED_MEMBERS = ("motion.npy", "kp.npy", "wav", "json", "audio.npy")


def decode_sample(raw: dict[str, Any], verify_all: bool = False) -> dict[str, Any]:
    """Raw tar members (bytes) → arrays: motion, kp, wav (int16), sample_rate, channels, meta, ….

    The sha256 of every decoded member is verified (of every member with `verify_all`, e.g. the
    mp4 too). Raises ContractError naming the member that is missing, corrupted or undecodable.
    """
    where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
    missing = [m for m in REQUIRED_MEMBERS if m not in raw]
    if missing:
        raise ContractError(f"{where}: missing member(s) {missing}; a sample needs {list(REQUIRED_MEMBERS)}")
    out: dict[str, Any] = {"__key__": raw.get("__key__"), "__url__": raw.get("__url__")}
    try:
        corrupted = verify_digests(raw, None if verify_all else DECODED_MEMBERS)
    except Exception as e:
        raise ContractError(f"{where}: unreadable sha256 member ({type(e).__name__}: {e})") from e
    if corrupted:
        raise ContractError(f"{where}: bytes of {corrupted} do not match the recorded sha256 (corrupted sample)")
    try:
        out["motion"] = decode_npy(raw["motion.npy"])
        out["kp"] = decode_npy(raw["kp.npy"])
        out["wav"], out["sample_rate"], out["channels"] = decode_wav(raw["wav"])
        out["meta"] = json.loads(raw["json"])
        if "audio.npy" in raw:
            out["audio_feats"] = decode_npy(raw["audio.npy"])
    except ContractError:
        raise
    except Exception as e:  # corrupt bytes of any kind: report which sample, keep the cause
        raise ContractError(f"{where}: cannot decode members ({type(e).__name__}: {e})") from e
    if "mp4" in raw:
        out["mp4"] = raw["mp4"]
    return out


# ------------------------------------------------------------------------------------------------
# The validator
# ------------------------------------------------------------------------------------------------


def sample_problems(s: dict[str, Any]) -> list[str]:
    """Every contract violation of a decoded sample (empty list = valid)."""
    p: list[str] = []
    key = s.get("__key__") or ""
    if not _KEY_RE.match(key):
        p.append(f"key {key!r} must be non-empty and contain only [A-Za-z0-9_-] (no dots)")
    motion, kp, wav = s.get("motion"), s.get("kp"), s.get("wav")
    t = -1
    if not isinstance(motion, np.ndarray) or motion.dtype != np.float32 or motion.ndim != 2:
        p.append(f"motion.npy must be float32 (T, {MOTION_DIM}), got {_desc(motion)}")
    elif motion.shape[1] != MOTION_DIM or motion.shape[0] < 1:
        p.append(f"motion.npy must be (T≥1, {MOTION_DIM}), got {motion.shape}")
    else:
        t = motion.shape[0]
        if not np.isfinite(motion).all():
            p.append(f"motion.npy has {int((~np.isfinite(motion)).sum())} non-finite values")
        else:
            p.extend(_motion_range_problems(motion))
    if not isinstance(kp, np.ndarray) or kp.dtype != np.float32 or kp.shape != (NUM_KP, 3):
        p.append(f"kp.npy must be float32 ({NUM_KP}, 3), got {_desc(kp)}")
    elif not np.isfinite(kp).all():
        p.append("kp.npy has non-finite values")
    if s.get("sample_rate") != SAMPLE_RATE or s.get("channels") != 1:
        p.append(f"wav must be {SAMPLE_RATE} Hz mono, got {s.get('sample_rate')} Hz × {s.get('channels')} ch")
    if isinstance(wav, np.ndarray) and t > 0 and wav.shape[0] != t * SAMPLES_PER_FRAME:
        p.append(
            f"wav has {wav.shape[0]} samples but motion has {t} frames: expected exactly "
            f"{t * SAMPLES_PER_FRAME} (= T·{SAMPLES_PER_FRAME}); off by {wav.shape[0] - t * SAMPLES_PER_FRAME}"
        )
    feats = s.get("audio_feats")
    if feats is not None:
        if feats.dtype != np.float16 or feats.ndim != 3 or (t > 0 and feats.shape[0] != t):
            p.append(f"audio.npy must be float16 (T={t}, L, C), got {_desc(feats)}")
        elif not np.isfinite(feats).all():
            p.append("audio.npy has non-finite values")
    p.extend(_meta_problems(s.get("meta"), t))
    return p


def _motion_range_problems(motion: np.ndarray) -> list[str]:
    """Values no face produces (a broken extraction, a unit error): they would dominate the loss."""
    p = []
    ang = np.abs(motion[:, ANGLES]).max()
    if ang > ANGLE_LIMIT_DEG:
        p.append(f"motion.npy rotation angle {ang:.1f}° outside ±{ANGLE_LIMIT_DEG}°")
    exp = np.abs(motion[:, EXP]).max()
    if exp > EXP_LIMIT:
        p.append(f"motion.npy expression value {exp:.3g} outside ±{EXP_LIMIT}")
    trans = np.abs(motion[:, TRANS]).max()
    if trans > TRANS_LIMIT:
        p.append(f"motion.npy translation {trans:.3g} outside ±{TRANS_LIMIT}")
    lo, hi = motion[:, SCALE].min(), motion[:, SCALE].max()
    if lo < SCALE_RANGE[0] or hi > SCALE_RANGE[1]:
        p.append(f"motion.npy scale in [{lo:.3g}, {hi:.3g}], outside {list(SCALE_RANGE)}")
    return p


def _meta_problems(meta: Any, t: int) -> list[str]:
    if not isinstance(meta, dict):
        return [f"json must be an object, got {type(meta).__name__}"]
    p = []
    for name, typ in REQUIRED_META.items():
        if name not in meta:
            p.append(f"json lacks field '{name}'")
        elif not isinstance(meta[name], typ) or isinstance(meta[name], bool):
            p.append(f"json field '{name}' has type {type(meta[name]).__name__}")
    if p:
        return p
    if meta["fps"] != FPS or meta["sample_rate"] != SAMPLE_RATE:
        p.append(f"json says fps {meta['fps']}, sample_rate {meta['sample_rate']}; contract: {FPS}, {SAMPLE_RATE}")
    if t > 0 and meta["num_frames"] != t:
        p.append(f"json num_frames {meta['num_frames']} != motion frames {t}")
    if meta["emotion"] is not None and meta["emotion"] not in EMOTIONS:
        p.append(f"json emotion {meta['emotion']!r} is not one of {list(EMOTIONS)} or null")
    for name in ("pose_mean", "pose_std"):
        v = meta[name]
        if len(v) != POSE_DIM or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            p.append(f"json {name} must be {POSE_DIM} finite numbers")
    if meta["schema_version"] != SCHEMA_VERSION:
        p.append(f"json schema_version {meta['schema_version']} != {SCHEMA_VERSION}")
    return p


def validate_sample(s: dict[str, Any]) -> dict[str, Any]:
    """Raise ContractError (naming shard, key and every problem) unless `s` meets the contract."""
    problems = sample_problems(s)
    if problems:
        where = f"{s.get('__url__') or '?'}:{s.get('__key__') or '?'}"
        raise ContractError(f"{where}: " + "; ".join(problems))
    return s


def _desc(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} {tuple(x.shape)}"
    return type(x).__name__
