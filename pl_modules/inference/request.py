"""One generation request as the `playmate generate` command states it, and its execution to files.

The dataclass is the single source of the command's defaults; this module imports no torch at
import time, so building the CLI parser stays fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_AUTO_THREADS = 4  # the sampler's matrices (3 CFG rows × 125 frames × width) gain little beyond this


@dataclass
class GenerationRequest:
    """Audio + reference (+ emotion, pose mode) → motion .npy (+ mp4)."""

    checkpoint: str  # Lightning .ckpt file, DeepSpeed .ckpt dir or `playmate export` dir
    audio: str  # any file FFmpeg reads; resampled to 16 kHz mono
    reference: str  # .npz (motion, kp) or a portrait image (needs face_model)
    out: str | None = None  # motion .npy; default: the audio's name with .npy, in the working directory
    emotion: str | None = None  # stage-two checkpoints only
    pose_mode: str = "generated"  # generated | fixed | driving | spin
    driving: str | None = None  # driving motion for pose_mode=driving
    video: str | None = None  # also render an mp4 with the audio (face model, else the synthetic-world renderer)
    ground_truth: str | None = None  # motion .npy/.npz drawn beside the generated one (synthetic renderer)
    face_model: str | None = None  # LivePortrait weights dir
    face_preset: str = "full"  # full | tiny (test weights)
    source_image: str | None = None  # portrait to animate when the reference is a .npz
    save_reference: str | None = None  # write the reference (motion, kp) as a .npz
    steps: int | None = None  # DDIM steps; None = the checkpoint's diffusion.sampling_steps
    w_a: float | None = None  # audio guidance; None = the checkpoint's
    w_e: float | None = None  # emotion guidance; None = the checkpoint's
    seed: int = 0
    device: str = "cpu"
    render_batch: int = 4  # frames per renderer batch
    threads: int | None = None  # torch intra-op CPU threads; None = `auto_threads()`

    def problems(self) -> list[str]:
        """Bad numbers and combinations, each naming its flag (checked before anything is loaded)."""
        p = []
        if self.steps is not None and self.steps < 1:
            p.append(f"--steps must be ≥ 1, got {self.steps}")
        for flag, v in (("--w-a", self.w_a), ("--w-e", self.w_e)):
            if v is not None and not (math.isfinite(v) and 0.0 <= v <= 100.0):
                p.append(f"{flag} must be a finite guidance scale in [0, 100], got {v}")
        if self.seed < 0:
            p.append(f"--seed must be ≥ 0, got {self.seed}")
        if self.render_batch < 1:
            p.append(f"--render-batch must be ≥ 1, got {self.render_batch}")
        if self.ground_truth and not self.video:
            p.append("--ground-truth is drawn beside the generated motion in the video: add --video OUT.mp4")
        if self.ground_truth and self.face_model:
            p.append("--ground-truth (side by side) is drawn by the synthetic-world renderer: drop --face-model")
        if self.source_image and not self.face_model:
            p.append("--source-image is animated by the face model: add --face-model DIR (the LivePortrait weights)")
        if self.threads is not None and self.threads < 1:
            p.append(f"--threads must be ≥ 1, got {self.threads}")
        return p

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(Path(self.audio).stem + ".npy")


def check_device(device: str) -> None:
    """A torch device string that exists on this machine, or one GenerationError line naming --device."""
    import torch

    from pl_modules.inference.inputs import GenerationError

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise GenerationError(f"--device {device!r} is not a torch device ({e}); e.g. cpu, cuda, cuda:1") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise GenerationError(f"--device {device}: no such CUDA device here ({torch.cuda.device_count()} visible); "
                              "use --device cpu")


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """Intra-op threads for generation: $OMP_NUM_THREADS when set, else the cores no other process is
    using now (usable cores − 1-minute load average, rounded), at least 1 and at most 4.

    Threads beyond the idle cores compete with other jobs: on a loaded 2-core machine 2 threads were
    11.5× slower than 1 (benchmarks/RESULTS.md), while the sampler's small matrices gain little past 4.
    """
    if cores is None and load is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(MAX_AUTO_THREADS, int(cores - load + 0.5)))


def run_request(req: GenerationRequest) -> dict[str, Any]:
    """Generate (and render) as the request says; returns {"motion": path, "frames": N, "video": path|None}.
    torch runs with `req.threads` intra-op threads (None: `auto_threads()`), restored afterwards."""
    import torch

    from pl_modules.inference.inputs import GenerationError

    problems = req.problems()
    if problems:
        raise GenerationError("; ".join(problems))
    check_device(req.device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(req.threads or auto_threads())
    try:
        return _run(req)
    finally:
        torch.set_num_threads(threads_before)  # a library caller keeps its own setting


def _run(req: GenerationRequest) -> dict[str, Any]:
    import numpy as np

    from pl_modules.inference.generator import generate_motion
    from pl_modules.inference.inputs import load_audio, load_driving, load_reference, save_reference
    from pl_modules.inference.render import load_face, render_video

    face = load_face(req.face_model, req.device, req.face_preset) if req.face_model else None
    ref = load_reference(req.reference, face)
    truth = load_driving(req.ground_truth, "ground-truth motion") if req.ground_truth else None
    if req.save_reference:
        save_reference(req.save_reference, ref)
    motion = generate_motion(req.checkpoint, req.audio, ref, emotion=req.emotion, pose_mode=req.pose_mode,
                             driving=req.driving, seed=req.seed, device=req.device, steps=req.steps, w_a=req.w_a,
                             w_e=req.w_e)
    out = req.out_path
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, motion)
    result: dict[str, Any] = {"motion": out, "frames": motion.shape[0], "video": None, "renderer": None}
    if req.video and face is not None:
        render_video(face, ref, motion, load_audio(req.audio), req.video, req.source_image, req.render_batch)
        result.update(video=Path(req.video), renderer="face model")
    elif req.video:
        from pl_modules.inference.synthetic_render import CAPTION, write_synthetic_video

        write_synthetic_video(req.video, ref.kp.numpy(), motion, load_audio(req.audio),
                              None if truth is None else truth.numpy())
        result.update(video=Path(req.video), renderer=CAPTION + (" (generated | ground truth)" if truth is not None
                                                                 else ""))
    return result
