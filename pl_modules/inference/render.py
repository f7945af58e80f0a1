"""Turning generated motion into video: the LivePortrait-compatible face model renders 512×512 frames
from the reference crop, and the 16 kHz audio is muxed in.

Shape legend: N frames (25 fps) · S = 640·N samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.clock import FPS, SAMPLE_RATE
from pl_modules.inference.inputs import GenerationError, Reference, load_portrait


def load_face(weights_dir: str | Path, device: str = "cpu", preset: str = "full"):
    """The face model from its public weights files; errors name the directory."""
    from models.liveportrait import FaceModelConfig, load_face_model

    cfg = FaceModelConfig.tiny() if preset == "tiny" else None
    try:
        return load_face_model(weights_dir, device, cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise GenerationError(f"--face-model {weights_dir}: {e}") from None


def render_video(face, reference: Reference, motion: np.ndarray, wav: np.ndarray, path: str | Path,
                 source_image: str | Path | None = None, batch_size: int = 4) -> int:
    """Render raw motion (N, 70) from the reference crop (or `source_image`), mux float audio (S,): frames written."""
    from datamodules.video import encode_mp4

    image = load_portrait(source_image) if source_image else reference.image
    if image is None:
        raise GenerationError("--video with a .npz reference needs --source-image IMG (the portrait to animate)")
    frames = face.render(image, reference.motion, reference.kp, motion, batch_size=batch_size)  # (N, 512, 512, 3)
    pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(frames, fps=FPS, audio=pcm, sample_rate=SAMPLE_RATE, path=path)
    return len(frames)
