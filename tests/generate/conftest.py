"""Fixtures for generation tests: tiny checkpoints in the `playmate export` format, audio files, references."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]

# Plausible normalisation statistics (degrees for angles, crop units for t, keypoint units for exp).
POSE_STD = [3.0, 4.0, 2.0, 0.01, 0.01, 0.01, 0.02]


def tiny_config(**model: object) -> dict:
    """The real stage-one config composed with model=tiny, mel features (L=1, C=80)."""
    from configs.loader import load_config, to_container
    from configs.schema import ExperimentConfig

    cfg = to_container(load_config(ExperimentConfig, ROOT / "configs" / "stage1.yaml",
                                   ["model=tiny", "data.train_shards=[x]", "logger=none"]))
    cfg["model"].update({"audio_layers": 1, "audio_dim": 80, **model})
    return cfg


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Give the zero-initialised layers (adaLN gates, head outputs) small random values, so the
    untrained network's output depends on its inputs (at init ε̂ ≡ 0)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if not p.any():
            p.copy_(std * torch.randn(p.shape, generator=g))


def write_export(out: Path, cfg: dict, stage_two: bool = False, seed: int = 0) -> Path:
    """An export dir (model.pt, config.yaml, stats.json) as `playmate export` writes it."""
    from models.dit import MotionDiT, MotionDiTConfig
    from models.emotion import EmotionControllerConfig, build_emotion_controller
    from models.motion import MotionStats

    torch.manual_seed(seed)
    model = MotionDiT(MotionDiTConfig(**cfg["model"]))
    if stage_two:
        model.attach_emotion_controller(build_emotion_controller(EmotionControllerConfig(**cfg["emotion"]),
                                                                 model.config))
    randomize(model, seed)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    stats = MotionStats(torch.zeros(63), torch.full((63,), 0.02), torch.tensor(POSE_STD))
    (out / "stats.json").write_text(json.dumps({**stats.to_dict(), "global_step": 0, "ema": False}))
    return out


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
