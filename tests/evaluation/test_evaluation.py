"""Evaluation core, report and `playmate evaluate` on a tiny random model (CPU, no real weights).

Fast tests inject stand-in networks (a renderer that upsamples the source frame, mean-colour
features for FID/FVD/CSIM, a brightness/energy SyncNet stub) so that every code path of the
evaluator runs in seconds; the real LivePortrait renderer and the random-weight metric networks run
in the `slow` test at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from configs.evaluation import EvaluationConfig
from datamodules.clips import load_clips, split_for_rank
from pl_modules.evaluation.evaluator import RANDOM_TITLE, Evaluator, generate_clip
from pl_modules.inference.generator import MotionGenerator


# ---------------------------------------------------------------- stand-ins


class StandInRenderer:
    """FaceModel.render's signature: the source frame upsampled to 512, a band darkened by |exp|."""

    def render(self, source_frame, source_motion, source_kp, driving_motion, batch_size: int = 4) -> np.ndarray:
        src = torch.from_numpy(np.asarray(source_frame)).permute(2, 0, 1).float()[None]  # (1, 3, 256, 256)
        up = F.interpolate(src, size=(512, 512), mode="nearest")[0].permute(1, 2, 0)  # (512, 512, 3)
        m = torch.as_tensor(np.asarray(driving_motion))
        shade = (m[:, :63].abs().mean(1) * 20).clamp(0, 120)  # (N,)
        frames = up[None].repeat(m.shape[0], 1, 1, 1)
        frames[:, 300:400] -= shade[:, None, None, None]
        return frames.clamp(0, 255).to(torch.uint8).numpy()


class MeanColour(nn.Module):
    """Features = mean RGB over every non-channel axis (images (N,3,H,W) or clips (N,3,T,H,W))."""

    num_features = 3

    def forward(self, x: Tensor) -> Tensor:
        return x.float().flatten(2).mean(-1).double()


class TinySync(nn.Module):
    """SyncNet stub: video window → 5 mean brightnesses; audio window → MFCC c0 pooled to 5."""

    def forward_lip(self, x: Tensor) -> Tensor:  # (N, 3, 5, 224, 224) → (N, 5)
        return x.mean(dim=(1, 3, 4)) / 255.0

    def forward_aud(self, x: Tensor) -> Tensor:  # (N, 1, 13, 20) → (N, 5)
        return x[:, 0, 0].reshape(-1, 5, 4).mean(-1) / 20.0


def stand_in_metrics() -> dict:
    from metrics.csim import CSIM
    from metrics.fid import FID
    from metrics.fvd import FVD, FVDConfig
    from metrics.image import build_psnr, build_ssim
    from metrics.motion import MotionMetrics
    from metrics.sync import SyncMetric

    net = TinySync()
    return {
        "motion": MotionMetrics(), "motion_gt": MotionMetrics(), "fid": FID(MeanColour()),
        "fvd": FVD(MeanColour(), FVDConfig(clip_len=9)), "sync": SyncMetric(net), "sync_gt": SyncMetric(net),
        "csim": CSIM(MeanColour()), "psnr": build_psnr(1.0), "ssim": build_ssim(1.0),
    }


def generator_for(export: Path) -> MotionGenerator:
    return MotionGenerator.from_checkpoint(export)


# ---------------------------------------------------------------- rank split, clips, generation


@pytest.mark.parametrize("n,world", [(8, 2), (7, 2), (5, 3), (2, 4), (1, 1)])
def test_split_for_rank_is_disjoint_and_complete(n, world):
    items = list(range(n))
    parts = [split_for_rank(items, r, world) for r in range(world)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == items and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError):
        split_for_rank(items, world, world)


def test_load_clips_takes_first_n_in_shard_order_and_cuts_frames(eval_assets):
    clips = load_clips([str(eval_assets["ds"])], num_clips=3, max_frames=25)
    assert [c.key for c in clips] == sorted(c.key for c in clips) and len(clips) == 3
    assert all(c.num_frames == 25 and c.wav.shape == (25 * 640,) and c.mp4 is None for c in clips)
    with pytest.raises(FileNotFoundError, match="--data"):
        load_clips([str(eval_assets["ds"] / "nope")], 2)


def test_generation_is_seeded_per_clip_and_whole_clip(eval_assets):
    gen = generator_for(eval_assets["exp1"])
    clip = load_clips([str(eval_assets["ds"])], 1, max_frames=36)[0]  # 3 windows of 16 frames (tp 4)
    a = generate_clip(gen, clip, 7)
    b = generate_clip(gen, clip, 7)
    c = generate_clip(gen, clip, 8)
    assert a.shape == (36, 70) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert not gen.model.training


def test_motion_only_core_is_rank_split_invariant(eval_assets):
    cfg = EvaluationConfig(num_clips=4, max_frames=20, metrics=["motion", "fid"])
    clips = load_clips([str(eval_assets["ds"])], cfg.num_clips, cfg.max_frames)
    gen = generator_for(eval_assets["exp1"])
    whole = Evaluator(cfg).run(gen, clips)
    assert whole.scalars["num_clips"] == 4 and not whole.random_weights
    for k in ("mouth_audio_r", "mouth_audio_r_gt", "mouth_audio_lag", "exp_acceleration", "pose_angle_l1_deg",
              "pose_std_deg_gt"):
        assert np.isfinite(whole.scalars[k]), k
    assert "fid" in whole.protocol["skipped"] and "face model" in whole.protocol["skipped"]["fid"]
    assert len(whole.samples) == cfg.num_videos and "gen_frames" not in whole.samples[0]
    # each rank's share gives exactly the rows of the whole run (same per-clip seeds)
    rows = {r["key"]: r for r in whole.per_clip}
    for rank in range(2):
        part = Evaluator(cfg).run(gen, split_for_rank(clips, rank, 2))
        for r in part.per_clip:
            assert r == rows[r["key"]]


def test_rendered_core_with_stand_in_networks(eval_assets):
    cfg = EvaluationConfig(num_clips=2, face_model_dir="injected", fvd_clip_len=9, num_videos=1, eval_size=64)
    ev = Evaluator(cfg, metrics=stand_in_metrics(), random_nets=["sync"], face_model=StandInRenderer())
    clips = load_clips([str(eval_assets["vds"])], 2)
    res = ev.run(generator_for(eval_assets["exp1"]), clips)
    for k in ("fid", "fvd", "sync_c", "sync_d", "sync_c_gt", "sync_d_gt", "csim", "psnr", "ssim", "mouth_audio_r"):
        assert np.isfinite(res.scalars[k]), k
    assert res.scalars["sync_num_videos"] == 2 and res.scalars["num_clips"] == 2
    p = res.protocol
    assert p["rendered_clips"] == 2 and p["rendered_frames"] == 20 and p["generated_frames"] == 20
    assert p["metrics"]["fid"]["n_real"] == 20 and p["metrics"]["fvd"]["n_fake"] == 2
    assert "64 → 224x224" in p["resolutions"]["sync"] and p["metrics"]["fvd"]["clip_len"] == 9
    assert res.random_weights and p["random_weights"] == ["sync"] and res.title == RANDOM_TITLE
    s = res.samples[0]
    assert s["gen_frames"].shape == (10, 3, 64, 64) and s["gt_frames"].dtype == torch.uint8
    assert all("sync_c" in r and "sync_c_gt" in r for r in res.per_clip)


# ---------------------------------------------------------------- report and command


def test_report_for_two_checkpoints_matches_core(eval_assets, tmp_path):
    from pl_modules.evaluation.offline import evaluate_checkpoints

    cfg = EvaluationConfig(num_clips=2, face_model_dir="injected", fvd_clip_len=9, eval_size=64)
    ev = Evaluator(cfg, metrics=stand_in_metrics(), random_nets=["sync"], face_model=StandInRenderer())
    core_results = []
    run = ev.run
    ev.run = lambda *a: core_results.append(run(*a)) or core_results[-1]  # keep what the core returned
    data = [str(eval_assets["vds"])]
    report = evaluate_checkpoints([eval_assets["exp1"], eval_assets["exp2"]], data, tmp_path / "out", cfg,
                                  device="cpu", evaluator=ev)
    out = report.parent
    md, page = report.read_text(), (out / "report.html").read_text()
    assert md.splitlines()[0] == f"# {RANDOM_TITLE}" and RANDOM_TITLE in page
    for text in ("## Protocol", "RANDOM WEIGHTS", "224x224 BGR", "### FVD variant", "clip_sampling",
                 "generated frames (25 fps)", "exp1/export (step 10)", "exp2/export (step 20)", "metric_vs_step.png"):
        assert text in md, text
    assert "data:image/png;base64," in page and "<table>" in page
    for png in ("metric_vs_step.png", "per_clip_mouth_audio_r.png", "strip_vid-v000.png"):
        assert (out / png).stat().st_size > 1000, png
    js = json.loads((out / "metrics.json").read_text())
    assert js["random_weights"] and [c["global_step"] for c in js["checkpoints"]] == [10, 20]
    # the json holds exactly the core's numbers
    assert len(core_results) == 2
    for entry, core in zip(js["checkpoints"], core_results):
        assert entry["scalars"] == pytest.approx(core.scalars, rel=1e-12, nan_ok=True)
        assert [r["key"] for r in entry["per_clip"]] == [r["key"] for r in core.per_clip]
    assert core_results[0].scalars["mouth_audio_r"] != core_results[1].scalars["mouth_audio_r"]


def test_cli_motion_only_report(eval_assets, tmp_path, capsys):
    from pl_modules.commands import main

    out = tmp_path / "rep"
    code = main(["evaluate", str(eval_assets["exp1"]), "--data", str(eval_assets["ds"]), "--out", str(out),
                 "--max-clips", "2", "--max-frames", "20", "--device", "cpu"])
    assert code == 0 and f"report: {out / 'report.md'}" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert md.startswith("# Playmate evaluation") and RANDOM_TITLE not in md
    assert "motion-only" in md and "driving keypoints" in md and "needs rendered frames" in md
    js = json.loads((out / "metrics.json").read_text())
    assert js["random_weights"] is False and js["checkpoints"][0]["scalars"]["num_clips"] == 2
    _check_temporal_and_videos(out, js, frames=20, width=512)
    assert main(["evaluate", str(eval_assets["exp1"]), "--data", str(tmp_path / "missing")]) == 2


def _check_temporal_and_videos(out: Path, js: dict, frames: int, width: int) -> None:
    """The report's temporal-realism section (ratio = generated / ground-truth mean, as the json says)
    and one playable video with audio per sample clip, linked in the md and embedded in the html."""
    import av

    from datamodules.video import count_frames

    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    sc = js["checkpoints"][0]["scalars"]
    assert "## Temporal realism" in md and "1.0 = moves like the data" in md
    for k in ("pose_velocity", "pose_acceleration", "exp_velocity", "exp_acceleration"):
        assert sc[f"{k}_ratio"] == pytest.approx(sc[k] / sc[f"{k}_gt"], rel=1e-9), k
    keys = [r["key"] for r in js["checkpoints"][0]["per_clip"]]
    assert (out / f"motion_{keys[0]}.png").stat().st_size > 1000
    assert page.count("<video controls") == len(keys) and "data:video/mp4;base64," in page
    for key in keys:
        assert f"(video_{key}.mp4)" in md
        data = (out / f"video_{key}.mp4").read_bytes()
        assert count_frames(data) == frames
        with av.open(str(out / f"video_{key}.mp4")) as c:
            assert c.streams.audio and c.streams.video[0].width == width


# ---------------------------------------------------------------- the real renderer + random-weight networks


@pytest.mark.slow
def test_real_renderer_and_random_weight_networks(eval_assets, tmp_path):
    """Tiny LivePortrait (random weights) renders; FID/FVD/Sync/CSIM run with random-weight networks."""
    from pl_modules.evaluation.offline import evaluate_checkpoints

    cfg = EvaluationConfig(num_clips=1, face_model_dir=str(eval_assets["face"]), face_model_preset="tiny",
                           random_weights=True, fvd_clip_len=9)
    report = evaluate_checkpoints([eval_assets["exp1"]], [str(eval_assets["vds"])], tmp_path / "o", cfg, device="cpu")
    js = json.loads((report.parent / "metrics.json").read_text())
    p = js["checkpoints"][0]["protocol"]
    assert sorted(p["random_weights"]) == ["csim", "fid", "sync"] and p["rendered_frames"] == 10
    assert "fvd" in p["skipped"]  # one clip: a Fréchet distance needs ≥ 2 samples per side (reported, not faked)
    assert len(p["face_model"]["files"]) == 4 and report.read_text().startswith(f"# {RANDOM_TITLE}")


def test_config_validation():
    with pytest.raises(ValueError, match="unknown"):
        EvaluationConfig(metrics=["fid", "psnrr"])
    with pytest.raises(ValueError, match="fvd_clip_len"):
        EvaluationConfig(fvd_clip_len=8)


def test_report_column_names_tell_checkpoints_apart():
    from pl_modules.evaluation.report import short_labels

    assert short_labels(["runs/a/export", "runs/b/ckpt"]) == ["export", "ckpt"]
    assert short_labels(["out/runs/stage1/checkpoints/last.ckpt", "out/runs/stage2/checkpoints/last.ckpt"]) == [
        "stage1/checkpoints/last.ckpt", "stage2/checkpoints/last.ckpt"]
    assert short_labels(["x/last.ckpt"]) == ["last.ckpt"]
