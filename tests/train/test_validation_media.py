"""Validation media: the temporal-realism ratios and a generated | ground-truth video with audio in W&B."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import torch
from tests.helpers import tiny_overrides, write_random_dataset

from configs.loader import load_experiment
from datamodules.video import count_frames
from pl_modules.train import train

ROOT = Path(__file__).resolve().parents[2]


def test_validation_logs_ratios_video_with_audio_and_plot(tmp_path):
    os.environ["PLAYMATE_PROGRESS"] = "0"
    write_random_dataset(tmp_path / "ds", clips=4, per_shard=2)
    run_dir = tmp_path / "run"
    ov = tiny_overrides(tmp_path / "ds", run_dir, steps=2, **{
        "logger": "wandb", "logger.mode": "offline", "trainer.val_every_n_steps": "2", "eval.val_video_seconds": "1.0"})
    trainer = train(load_experiment(ROOT / "configs" / "stage1.yaml", ov))
    for k in ("val/pose_velocity_ratio", "val/pose_acceleration_ratio", "val/exp_velocity_ratio",
              "val/exp_acceleration_ratio"):
        assert torch.isfinite(trainer.callback_metrics[k]) and trainer.callback_metrics[k] > 0, k
    videos = sorted((run_dir / "val_media").glob("*.mp4"))
    assert len(videos) == 1
    data = videos[0].read_bytes()
    window = trainer.lightning_module.cfg.model.t_window
    assert count_frames(data) == min(window, 25)  # val_video_seconds = 1 s, or the whole window if shorter
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.audio and c.streams.video[0].width == 512  # generated | ground truth
    media = {p.suffix for p in run_dir.rglob("*") if "media" in p.parts and p.is_file()}
    assert {".mp4", ".png"} <= media  # logged to the (offline) W&B run: val/video, val/motion_over_time


def test_validation_video_switch_off(tmp_path):
    os.environ["PLAYMATE_PROGRESS"] = "0"
    write_random_dataset(tmp_path / "ds", clips=4, per_shard=2)
    ov = tiny_overrides(tmp_path / "ds", tmp_path / "run", steps=2, **{
        "logger": "wandb", "logger.mode": "offline", "trainer.val_every_n_steps": "2", "eval.val_video": "false"})
    trainer = train(load_experiment(ROOT / "configs" / "stage1.yaml", ov))
    assert "val/pose_velocity_ratio" in trainer.callback_metrics  # the numbers stay
    assert not list((tmp_path / "run").rglob("*.mp4"))
