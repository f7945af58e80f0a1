"""Fixtures for the pure-torch model tests: a tiny mel-sized MotionDiT and matching inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) from a checkout without install
    sys.path.insert(0, str(ROOT))

from _model_helpers import tiny_config  # noqa: E402
from models.dit import MotionDiT  # noqa: E402


@pytest.fixture
def tiny_dit() -> MotionDiT:
    torch.manual_seed(0)
    return MotionDiT(tiny_config()).eval()
