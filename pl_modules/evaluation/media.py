"""What a person looks at: a clip's generated-vs-ground-truth video and its motion-over-time plot.

Shared by validation (W&B), the evaluation callback (W&B) and the evaluation report (files, HTML).

    sample_video   generated | ground truth mp4 with the clip's audio: rendered frames when a face
                   model rendered the clip, else the synthetic-world renderer draws the motion
    motion_plot    head-pose angles (pitch, yaw, roll) and mouth opening over time, generated vs
                   ground truth, as an RGB image

Shape legend: T frames (25 fps) · S = 640·T audio samples (16 kHz).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from metrics.motion import mouth_series
from models.clock import SAMPLES_PER_FRAME
from models.motion import ANGLES


def sample_video(sample: dict[str, Any], path: str | Path, max_frames: int | None = None) -> Path:
    """A sample (key, gen_motion, gt_motion (T, 70), kp (21, 3), wav (S,), optional meta, gen_frames /
    gt_frames (T, 3, H, W) uint8 when rendered) → mp4 with audio at `path`; at most `max_frames` frames."""
    from datamodules.video import encode_mp4
    from pl_modules.inference.synthetic_render import look_for, to_pcm, write_synthetic_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = None if sample.get("wav") is None else np.asarray(sample["wav"])
    if "gen_frames" in sample:
        frames = torch.cat([sample["gen_frames"], sample["gt_frames"]], dim=-1)  # (T, 3, H, 2W)
        frames = frames[:max_frames].permute(0, 2, 3, 1).numpy()
        encode_mp4(np.ascontiguousarray(frames), audio=None if wav is None else to_pcm(wav, len(frames)), path=path)
        return path
    gen = np.asarray(sample["gen_motion"], np.float32)[:max_frames]
    kp = np.asarray(sample["kp"], np.float32)
    write_synthetic_video(path, kp, gen, wav, np.asarray(sample["gt_motion"], np.float32),
                          look_for(kp, sample.get("meta")))
    return path


def motion_plot(gen: torch.Tensor, gt: torch.Tensor, kp: torch.Tensor, title: str = "") -> np.ndarray:
    """Raw motion (T, 70) generated and ground truth + x_c (21, 3) → uint8 RGB (H, W, 3): pitch, yaw,
    roll (deg) and mouth opening over frames, generated (blue) vs ground truth (green)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen, gt, kp = gen.float().cpu(), gt.float().cpu(), kp.float().cpu()
    series = [(name, gen[:, ANGLES.start + i].numpy(), gt[:, ANGLES.start + i].numpy(), "deg")
              for i, name in enumerate(("pitch", "yaw", "roll"))]
    series.append(("mouth opening", mouth_series(gen, kp).numpy(), mouth_series(gt, kp).numpy(), "kp units"))
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 6.4), sharex=True)
    for ax, (name, g, t, unit) in zip(axes, series):
        ax.plot(t, color="tab:green", label="ground truth")
        ax.plot(g, color="tab:blue", label="generated")
        ax.set_ylabel(f"{name}\n({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(loc="upper right", fontsize=7)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("frame (25 fps)")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
    plt.close(fig)
    return image


def validation_sample(out: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The first clip of a validation batch output (gen, gt (B, T, 70), kp, wav (B, S), key) as a
    sample for `sample_video` / `motion_plot`, cut to `seconds`."""
    n = max(1, min(int(out["gen"].shape[1]), round(seconds * 25)))
    wav = out.get("wav")
    return {"key": out["key"][0], "gen_motion": out["gen"][0][:n].cpu(), "gt_motion": out["gt"][0][:n].cpu(),
            "kp": out["kp"][0].cpu(), "wav": None if wav is None else wav[0][: n * SAMPLES_PER_FRAME].cpu().numpy()}
