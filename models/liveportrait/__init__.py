"""LivePortrait-compatible face model: F, M, W, G of the public release, the motion API and crop conventions.

Public API:
    load_face_model(weights_dir, device="cpu", cfg=None, amp_dtype=None) -> FaceModel
    build_face_model(cfg=None) -> FaceModel   (random weights; cfg a FaceModelConfig or 'tiny' / 'full')
    FaceModel.extract_motion(frames (N, 256, 256, 3) uint8) -> motion (N, 70), kp_c (N, 21, 3)
    FaceModel.render(source_frame, source_motion, source_kp, driving_motion, batch_size=4)
        -> uint8 (N, 512, 512, 3)
    crop_face(image, box=... | landmarks=..., params=SOURCE_CROP) -> crop (256, 256, 3), matrix (2, 3)
    models.liveportrait.testing.write_random_weights(weights_dir, seed=0) -> base_models dir
"""

from models.liveportrait.appearance import AppearanceConfig, AppearanceFeatureExtractor
from models.liveportrait.crop import DRIVING_CROP, SOURCE_CROP, CropParams, crop_face
from models.liveportrait.face_model import (
    INPUT_SIZE,
    OUTPUT_SIZE,
    PRESETS,
    FaceModel,
    FaceModelConfig,
    build_face_model,
    frames_to_input,
    motion_from_outputs,
)
from models.liveportrait.loading import (
    CHECKPOINT_FILES,
    load_face_model,
    load_module_weights,
)
from models.liveportrait.motion_extractor import MotionExtractor, MotionExtractorConfig
from models.liveportrait.spade import SPADEConfig, SPADEDecoder
from models.liveportrait.warping import DenseMotionConfig, WarpingConfig, WarpingNetwork

__all__ = [
    "AppearanceConfig",
    "AppearanceFeatureExtractor",
    "CHECKPOINT_FILES",
    "CropParams",
    "DRIVING_CROP",
    "DenseMotionConfig",
    "FaceModel",
    "FaceModelConfig",
    "INPUT_SIZE",
    "MotionExtractor",
    "MotionExtractorConfig",
    "OUTPUT_SIZE",
    "PRESETS",
    "SOURCE_CROP",
    "SPADEConfig",
    "SPADEDecoder",
    "WarpingConfig",
    "WarpingNetwork",
    "build_face_model",
    "crop_face",
    "frames_to_input",
    "load_face_model",
    "load_module_weights",
    "motion_from_outputs",
]
