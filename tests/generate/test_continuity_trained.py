"""Window-boundary continuity of a briefly trained tiny model on 30 s of synthetic speech (slow).

An untrained network samples noise-like motion, where "no jump at the boundaries" says little. Here a
tiny stage-one DiT is trained for a few hundred steps on the synthetic world (smooth OU head pose,
mouth following the audio envelope; datamodules/synthetic.py), with a plain loop over the same
`training_loss` the LightningModule uses, exported in the `playmate export` format and run through
`generate_motion`. Measured: the frame-to-frame change (L2 over the 70 normalised dims) at the
window boundaries 100, 200, …, 700 against the changes inside windows.

    PLAYMATE_CONTINUITY_STEPS=1500 PLAYMATE_CONTINUITY_REPORT=cont.json \
        pytest -m slow tests/generate/test_continuity_trained.py -s     # the RESULTS.md numbers (~16 min CPU)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.generate.conftest import tiny_config
from tests.helpers import write_checkpoint

from models.motion import POSE, MotionStats, normalize_motion
from pl_modules.evaluation.probes import boundary_continuity
from pl_modules.inference.generator import generate_motion
from pl_modules.inference.inputs import Reference

STEPS = int(os.environ.get("PLAYMATE_CONTINUITY_STEPS", "300"))  # training steps


def synthetic_clips(n: int) -> list:
    from datamodules.synthetic import synthesize_clip

    return [synthesize_clip(0, i, identity=i % 4, min_seconds=8, max_seconds=10, video=False) for i in range(n)]


def clip_stats(clips: list) -> MotionStats:
    m = np.concatenate([c.motion for c in clips])
    pose_std = np.mean([c.motion[:, 63:].std(0) for c in clips], axis=0)
    return MotionStats(torch.from_numpy(m[:, :63].mean(0)), torch.from_numpy(m[:, :63].std(0)),
                       torch.from_numpy(pose_std.astype(np.float32)))


def train_tiny(cfg: dict, clips: list, stats: MotionStats, steps: int, batch: int = 16, seed: int = 0):
    """A plain training loop: random windows of Tp + T frames, adaptive normalisation as in the datamodule."""
    from models.audio import build_audio_encoder
    from models.diffusion import NoiseSchedule, training_loss
    from models.dit import Condition, MotionDiT, make_id_feat

    torch.manual_seed(seed)
    model = MotionDiT(cfg.model)
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    enc = build_audio_encoder(cfg.audio)
    data = []
    for c in clips:
        n = len(c.motion)
        feats = enc(torch.from_numpy(c.wav.astype(np.float32) / 32768)[None], n)[0]  # (n, 1, 80)
        x = normalize_motion(torch.from_numpy(c.motion), stats, torch.from_numpy(c.motion[:, 63:].mean(0)))
        first = torch.from_numpy(c.motion[0])
        ref = normalize_motion(first, stats, first[POSE])
        data.append((x, feats, make_id_feat(torch.from_numpy(c.kp)[None], ref[None])[0]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    tp, t = model.config.tp, model.config.t_window
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        picks = [data[i] for i in rng.integers(0, len(data), batch)]
        starts = [int(rng.integers(tp, len(x) - t + 1)) for x, _, _ in picks]
        win = torch.stack([x[s - tp : s + t] for (x, _, _), s in zip(picks, starts)])  # (B, Tp+T, 70)
        aud = torch.stack([a[s - tp : s + t] for (_, a, _), s in zip(picks, starts)])  # (B, Tp+T, 1, 80)
        cond = Condition(aud, torch.stack([f for _, _, f in picks]), win[:, :tp])
        loss = training_loss(model, schedule, win[:, tp:], cond)["loss"]
        for group in opt.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 20)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval(), loss.item()


@pytest.mark.slow
def test_trained_model_is_continuous_across_window_boundaries(tmp_path):
    from datamodules.synthetic import synth_audio

    cfg = tiny_config()
    clips = synthetic_clips(12)
    stats = clip_stats(clips)
    t0 = time.perf_counter()
    model, loss = train_tiny(cfg, clips, stats, STEPS)
    train_s = time.perf_counter() - t0
    ckpt = write_checkpoint(tmp_path / "ckpt", cfg, stats, state_dict=model.state_dict())

    ref = Reference(torch.from_numpy(clips[0].motion[0]), torch.from_numpy(clips[0].kp))
    wav = synth_audio(30.0, seed=7)  # int16 16 kHz, 750·640 samples
    t0 = time.perf_counter()
    motion = generate_motion(ckpt, wav, ref, steps=50)
    gen_s = time.perf_counter() - t0
    assert motion.shape == (750, 70)
    x = normalize_motion(torch.from_numpy(motion), stats, ref.motion[POSE])
    c = boundary_continuity(x, model.config.t_window)
    pose = boundary_continuity(x[:, 63:], model.config.t_window)
    report = {"train_steps": STEPS, "final_loss": round(loss, 4), "train_s": round(train_s, 1),
              "generate_s": round(gen_s, 1), "all_dims": c, "pose_dims": pose}
    print(json.dumps(report, indent=1))
    Path(os.environ.get("PLAYMATE_CONTINUITY_REPORT", tmp_path / "report.json")).write_text(json.dumps(report))
    assert c["boundary_max"] <= c["within_max"], report
    assert pose["boundary_max"] <= pose["within_max"], report
