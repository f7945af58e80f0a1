"""Validation motion metrics of generated windows (raw, de-normalised motion)."""

from __future__ import annotations

from typing import Any

import numpy as np

from metrics.motion import motion_jitter, mouth_audio_correlation


def motion_validation_metrics(outputs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over clips of mouth/audio Pearson r (and lag) for generated and ground-truth motion.

    Each output holds gen, gt (B, T, 70) raw motion, kp (B, 21, 3), wav (B, T·640) int16 or None.
    """
    r_gen, r_gt, lags, jitter = [], [], [], []
    for out in outputs:
        for i in range(out["gen"].shape[0]):
            jitter.append(motion_jitter(out["gen"][i])["exp_acceleration"])
            if out.get("wav") is None:
                continue
            wav = out["wav"][i].cpu()
            r, lag = mouth_audio_correlation(out["gen"][i], out["kp"][i], wav)
            r_gen.append(r)
            lags.append(lag)
            r_gt.append(mouth_audio_correlation(out["gt"][i], out["kp"][i], wav)[0])
    metrics: dict[str, float] = {"exp_acceleration": float(np.mean(jitter))}
    if r_gen:
        metrics.update({
            "mouth_audio_r": float(np.nanmean(r_gen)),
            "mouth_audio_r_gt": float(np.nanmean(r_gt)),
            "mouth_audio_lag": float(np.mean(lags)),
        })
    return metrics
