"""Constants shared by the face-model tests (a uniquely named module, importable from any test file)."""

from __future__ import annotations

from pathlib import Path

# The public checkpoints' state-dict manifest (KwaiVGI/LivePortrait @ 1986663): every key and shape.
MANIFEST_PATH = Path(__file__).parent / "data" / "liveportrait_state_dicts.json"

# FaceModel attribute → manifest module name.
MANIFEST_NAMES = {
    "appearance_extractor": "appearance_feature_extractor",
    "motion_extractor": "motion_extractor",
    "warping_module": "warping_module",
    "spade_generator": "spade_generator",
}
