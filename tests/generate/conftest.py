"""Fixtures for generation tests: tiny checkpoints in the `playmate export` format, audio files, references."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

# Plausible normalisation statistics (degrees for angles, crop units for t, keypoint units for exp).
POSE_STD = [3.0, 4.0, 2.0, 0.01, 0.01, 0.01, 0.02]


def tiny_config(**model: str):
    """The real stage-one config shrunk (tests.helpers.tiny_config), mel features (L = 1, C = 80);
    `model` overrides fields of the model section (e.g. depth="3")."""
    from tests.helpers import tiny_config as experiment

    return experiment(**{f"model.{k}": str(v) for k, v in model.items()})


def write_export(out: Path, cfg, stage_two: bool = False, seed: int = 0) -> Path:
    """An export (model.pt, config.yaml, stats.json) of a random model, via the production exporter.

    Plausible statistics: zero expression mean, std 0.02, pose std POSE_STD.
    """
    from dataclasses import replace

    from models.motion import MotionStats
    from tests.helpers import write_checkpoint

    if stage_two:
        cfg = replace(cfg, stage="stage2", stage2=replace(cfg.stage2, init_from="unused"))
    stats = MotionStats(torch.zeros(63), torch.full((63,), 0.02), torch.tensor(POSE_STD))
    out.mkdir(parents=True, exist_ok=True)
    return write_checkpoint(out, cfg, stats, seed=seed)


def write_wav(path: Path, seconds: float, rate: int = 44_100, channels: int = 2, seed: int = 0) -> Path:
    """A speech-like test signal (amplitude-modulated harmonics + noise) as 16-bit PCM wav."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    x = env * (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 420 * t)) + 0.05 * rng.normal(size=t.shape)
    pcm = (np.clip(x / 2, -1, 1) * 32767).astype(np.int16)
    pcm = np.repeat(pcm[:, None], channels, axis=1)  # (S, channels) interleaved
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def reference_motion(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    motion = (0.01 * rng.normal(size=70)).astype(np.float32)
    motion[63:66] = [5.0, -10.0, 2.0]  # pitch, yaw, roll
    motion[66:69] = [0.02, -0.01, 0.0]
    motion[69] = 1.1
    return motion, (0.1 * rng.normal(size=(21, 3))).astype(np.float32)


@pytest.fixture(scope="session")
def stage1_ckpt(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("ckpt") / "stage1", tiny_config())


@pytest.fixture(scope="session")
def stage2_ckpt(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("ckpt") / "stage2", tiny_config(), stage_two=True, seed=1)


@pytest.fixture(scope="session")
def reference_npz(tmp_path_factory) -> Path:
    motion, kp = reference_motion()
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    np.savez(path, motion=motion, kp=kp)
    return path


@pytest.fixture(scope="session")
def audio_30s(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("audio") / "talk_44k_stereo.wav", 30.0)


@pytest.fixture(scope="session")
def audio_short(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("audio") / "short.wav", 2.0, rate=22_050, channels=1)


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """One intra-op thread: on a shared, oversubscribed CPU box two OpenMP threads spin against other
    jobs and were measured ~50× slower for these small matmuls (benchmarks/RESULTS.md, issue 4)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
