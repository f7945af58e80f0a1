"""Fixtures for the prepare tests: a stand-in motion extractor, configs, a MEAD tree at 30 fps / 44.1 kHz."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from media import build_mead


class StubExtractor:
    """Deterministic stand-in for FaceModel.extract_motion: motion from image statistics, yaw from `yaw`."""

    def __init__(self, yaw: float = 5.0) -> None:
        self.yaw = yaw
        self.frames_seen = 0

    def extract_motion(self, frames: np.ndarray):
        x = torch.as_tensor(np.asarray(frames)).float() / 255  # (N, 256, 256, 3)
        n = x.shape[0]
        self.frames_seen += n
        m = torch.zeros(n, 70)
        m[:, :63] = 0.1 * x.mean(dim=(1, 2)).repeat(1, 21)  # (N, 63)
        m[:, 63] = 2.0 * x[..., 0].mean(dim=(1, 2))  # pitch
        m[:, 64] = self.yaw
        m[:, 69] = 1.0
        kp = x.mean(dim=(1, 2, 3))[:, None, None].expand(n, 21, 3).clone()  # (N, 21, 3)
        return m, kp


@pytest.fixture
def stub() -> StubExtractor:
    return StubExtractor()


def make_cfg(**kw):
    from datamodules.prepare.config import PrepareConfig

    cfg = PrepareConfig(dataset=kw.pop("dataset", "mead"), input=str(kw.pop("input")), output=str(kw.pop("output")))
    cfg.progress = False
    cfg.decode_max_side = 128
    cfg.filters.min_face_px = 32
    for k, v in kw.items():
        obj = cfg
        *path, leaf = k.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, leaf, v)
    return cfg


@pytest.fixture(scope="session")
def mead_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("raw") / "mead"
    expect = build_mead(root)
    return root, expect
