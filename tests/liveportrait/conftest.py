"""Fixtures for the face-model tests: the public manifest, tiny and full random models, weights on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.liveportrait import FaceModel, FaceModelConfig, load_face_model
from models.liveportrait.testing import random_face_model, write_random_weights

from _lp_helpers import MANIFEST_PATH


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads(MANIFEST_PATH.read_text())


@pytest.fixture(scope="session")
def tiny_model() -> FaceModel:
    return random_face_model(seed=0, cfg="tiny")


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lp_tiny")
    write_random_weights(root, seed=0, cfg="tiny")
    return root


@pytest.fixture(scope="session")
def full_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four files at the public shapes (about 500 MB), in the public layout liveportrait/base_models/."""
    root = tmp_path_factory.mktemp("lp_full")
    write_random_weights(root / "liveportrait", seed=0)
    return root


@pytest.fixture(scope="session")
def full_model(full_weights_dir: Path) -> FaceModel:
    return load_face_model(full_weights_dir, "cpu")


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    """Two smooth random uint8 'faces' (N, 256, 256, 3)."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    up = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)  # (2, 256, 256, 3)
    return np.clip(up + rng.normal(0, 8, up.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_cfg() -> FaceModelConfig:
    return FaceModelConfig.tiny()
