"""Validation motion metrics of generated windows (raw, de-normalised motion)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metrics.motion import LIPS, motion_jitter, mouth_audio_correlation, mouth_series
from metrics.temporal import temporal_report
from models.audio import audio_envelope


def lips_protocol(lips: tuple[int, int]) -> str:
    """The line validation logs once: which keypoints the mouth-opening signal uses."""
    return (f"val/mouth_audio_r: mouth opening = y[kp {lips[1]}] − y[kp {lips[0]}] (eval.lip_keypoints = "
            f"[{lips[0]}, {lips[1]}]; check real motion with `playmate shards lips DIR`)")


def motion_validation_metrics(outputs: list[dict[str, Any]], lips: tuple[int, int] = LIPS) -> dict[str, float]:
    """Mean over clips of mouth/audio Pearson r (and lag) for generated and ground-truth motion, the
    expression acceleration, and the temporal-realism ratios (generated / ground truth, `metrics.temporal`).

    Each output holds gen, gt (B, T, 70) raw motion, kp (B, 21, 3), wav (B, T·640) int16 or None;
    lips = (upper, lower) keypoints of the mouth opening (eval.lip_keypoints).
    """
    r_gen, r_gt, lags, jitter = [], [], [], []
    for out in outputs:
        for i in range(out["gen"].shape[0]):
            jitter.append(motion_jitter(out["gen"][i])["exp_acceleration"])
            if out.get("wav") is None:
                continue
            wav = out["wav"][i].cpu()
            r, lag = mouth_audio_correlation(out["gen"][i], out["kp"][i], wav, lips=lips)
            r_gen.append(r)
            lags.append(lag)
            r_gt.append(mouth_audio_correlation(out["gt"][i], out["kp"][i], wav, lips=lips)[0])
    metrics: dict[str, float] = {"exp_acceleration": float(np.mean(jitter))}
    gen = [out["gen"][i] for out in outputs for i in range(out["gen"].shape[0])]
    gt = [out["gt"][i] for out in outputs for i in range(out["gt"].shape[0])]
    report = temporal_report(gen, gt)  # temporal realism: generated / ground truth, ratio of the means
    metrics.update({k: v for k, v in report.items() if k.endswith("_ratio")})
    if r_gen:
        metrics.update({
            "mouth_audio_r": float(np.nanmean(r_gen)),
            "mouth_audio_r_gt": float(np.nanmean(r_gt)),
            "mouth_audio_lag": float(np.mean(lags)),
        })
    return metrics


def log_mouth_plot(logger: Any, out: dict[str, Any], step: int, lips: tuple[int, int] = LIPS) -> None:
    """W&B image: generated vs ground-truth mouth opening (and the audio envelope) of the first clip."""
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger) or out.get("wav") is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen, gt = mouth_series(out["gen"][0], out["kp"][0], lips), mouth_series(out["gt"][0], out["kp"][0], lips)
    env = audio_envelope(out["wav"][0].cpu(), gen.numel())
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(gt.numpy(), label="ground truth", color="tab:green")
    ax.plot(gen.numpy(), label="generated", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(env.numpy(), color="tab:gray", alpha=0.5, label="audio envelope")
    ax.set_xlabel("frame (25 fps)")
    ax.set_ylabel(f"mouth opening (kp {lips[1]} − kp {lips[0]})")
    ax.set_title(f"{out['key'][0]} · step {step}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
    plt.close(fig)
    logger.log_image("val/mouth_opening", [image], step=step)


def log_sample_media(logger: Any, out: dict[str, Any], step: int, seconds: float, folder: Path) -> Path | None:
    """W&B video (mp4 with audio, generated | ground truth drawn by the synthetic-world renderer) and
    image (pose angles and mouth opening over time) of the first clip, cut to `seconds`; returns the mp4."""
    from lightning.pytorch.loggers import WandbLogger

    from pl_modules.evaluation.media import motion_plot, sample_video, validation_sample

    if not isinstance(logger, WandbLogger):
        return None
    s = validation_sample(out, seconds)
    path = sample_video(s, folder / f"val_step{step:08d}_{s['key'].replace('/', '_')}.mp4")
    caption = f"{s['key']} · step {step} · generated | ground truth"
    logger.log_video("val/video", [str(path)], step=step, fps=[25], format=["mp4"], caption=[caption])
    plot = motion_plot(s["gen_motion"], s["gt_motion"], s["kp"], f"{s['key']} · step {step}")
    logger.log_image("val/motion_over_time", [plot], step=step)
    return path
