"""`--protocol hdtf` and the comparison with the published Playmate HDTF numbers.

A report made with random-weight networks shows the protocol and never a comparison column; with
weights files (generated, in the real files' formats: SyncNet, I3D, ArcFace) the results table shows
the published numbers and names every protocol detail that differs. The renderer is the stand-in of
test_evaluation (the tiny LivePortrait renders 512x512 frames at about 4 s per frame on one CPU core;
the slow test at the end runs it through the command line).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from configs.evaluation import PROTOCOLS, EvaluationConfig
from pl_modules.evaluation.evaluator import RANDOM_TITLE, Evaluator
from pl_modules.evaluation.published import PUBLISHED, comparison
from tests.evaluation.test_evaluation import StandInRenderer

HEADER = "| published (Playmate (arXiv 2502.07203), Table 1, HDTF) | samples | comparable |"


@pytest.fixture(scope="module")
def hdtf_assets(tmp_path_factory, eval_assets):
    """Synthetic-world clips with video (20 frames: one 16-frame FVD clip each) and weights files."""
    from datamodules.synthetic import synthesize_dataset
    from metrics.csim import IResNet
    from metrics.fvd import InceptionI3d
    from models.syncnet import SyncNet

    tmp = tmp_path_factory.mktemp("hdtf")
    synthesize_dataset(tmp / "synth", 2, seed=11, min_seconds=0.8, max_seconds=0.8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save({k: v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")},
                   tmp / "syncnet_v2.model")
        torch.save(InceptionI3d().state_dict(), tmp / "i3d_pretrained_400.pt")
        torch.save(IResNet("r18").state_dict(), tmp / "backbone.pth")
    return {"synth": tmp / "synth", "exp": eval_assets["exp1"], "syncnet": tmp / "syncnet_v2.model",
            "i3d": tmp / "i3d_pretrained_400.pt", "arcface": tmp / "backbone.pth"}


def report(assets, out, **settings):
    from pl_modules.evaluation.offline import evaluate_checkpoints

    cfg = EvaluationConfig.for_protocol("hdtf", face_model_dir="injected", **settings)
    md = evaluate_checkpoints([assets["exp"]], [str(assets["synth"])], out, cfg, device="cpu",
                              evaluator=Evaluator(cfg, face_model=StandInRenderer()))
    return md.read_text(), json.loads(md.with_name("metrics.json").read_text())


def test_hdtf_report_with_random_weights_shows_the_protocol_and_no_comparison(hdtf_assets, tmp_path):
    md, js = report(hdtf_assets, tmp_path / "r", random_weights=True, metrics=["motion", "sync"])
    assert md.startswith(f"# {RANDOM_TITLE}") and js["random_weights"] and js["protocol"] == "hdtf"
    assert "| protocol | hdtf " in md and "### Published HDTF tables vs this run" in md
    assert "| FVD | I3D, every non-overlapping 16-frame clip |" in md
    assert "published (Playmate" not in md and "| comparable |" not in md  # no comparison column
    assert js["checkpoints"][0]["comparison"] is None
    p = js["checkpoints"][0]["protocol"]
    assert p["name"] == "hdtf" and p["settings"]["eval_size"] == 512 and p["all_clips_of_data"] is True
    assert p["clips"] == 2 and p["clips_cut"] == 0 and p["gt_frame_sizes"] == [256] and p["datasets"] == ["synth"]


@pytest.fixture(scope="module")
def weights_report(hdtf_assets, tmp_path_factory):
    """(report.md, metrics.json) of an hdtf run with SyncNet, I3D and ArcFace weights files (FID: none given)."""
    a = hdtf_assets
    return report(a, tmp_path_factory.mktemp("w"), metrics=["motion", "fvd", "sync", "csim"],
                  syncnet_weights=str(a["syncnet"]), fvd_weights=str(a["i3d"]), arcface_weights=str(a["arcface"]),
                  arcface_arch="r18")


def test_hdtf_report_with_weights_files_compares_with_the_published_numbers(weights_report):
    md, js = weights_report
    assert md.startswith("# Playmate evaluation") and not js["random_weights"]
    assert HEADER in md
    comp = js["checkpoints"][0]["comparison"]
    assert sorted(comp) == ["csim", "fvd", "sync_c", "sync_d"]  # FID: no weights file, not computed
    for name, c in comp.items():
        assert c["published"] == PUBLISHED[name]
        assert c["comparable"].startswith("no: ")
        for detail in ("data: synth clips, not the HDTF test set", "weights: injected renderer, not LivePortrait"):
            assert detail in c["comparable"], (name, c["comparable"])
    # the row of the results table: value, published number, sample count, the named differences
    fvd_row = next(line for line in md.splitlines() if line.startswith("| fvd |"))
    assert "| 231 | 2 / 2 clips of 16 frames | no: " in fvd_row
    assert "resolution: ground truth is 256x256 video upscaled, not 512x512 crops" in comp["fvd"]["comparable"]
    assert "crop: whole face crop resized to 224, not S3FD face tracks" in comp["sync_c"]["comparable"]
    assert "resolution" not in comp["sync_c"]["comparable"]  # Sync scores the generated video alone
    assert "no landmarks available" in comp["csim"]["comparable"]
    assert comp["sync_c"]["samples"] == "2 videos" and comp["csim"]["samples"] == "40 frame pairs"


def test_comparable_says_yes_only_when_every_detail_matches(weights_report):
    _, js = weights_report
    scalars, proto = js["checkpoints"][0]["scalars"], js["checkpoints"][0]["protocol"]
    scalars = {k: v for k, v in scalars.items() if k != "csim"}  # CSIM: never comparable without landmarks
    # the protocol of a run that matches the tables: HDTF clips, LivePortrait, 512 crops, S3FD face tracks
    match = copy.deepcopy(proto)
    match.update(datasets=["hdtf"], gt_frame_sizes=[512])
    match["face_model"] = {"configured": True, "dir": "weights/liveportrait", "preset": "full"}
    match["metrics"]["sync"].update(crop_mode="s3fd_track", face_detector={"sha256": "ab" * 32},
                                    tracking={"min_track": 100, "min_face_size": 100.0, "scales": [0.25]})
    assert {k: c["comparable"] for k, c in comparison(match, scalars).items()} == {
        "fvd": "yes", "sync_c": "yes", "sync_d": "yes"}
    # each differing detail is named
    cases = [
        ({"all_clips_of_data": False, "clips": 2}, "fvd", "sample count: the first 2 clips of the data, not all"),
        ({"clips_cut": 1}, "sync_c", "sample count: 1 clips cut to max_frames"),
        ({"settings": {**match["settings"], "eval_size": 256}}, "sync_d",
         "resolution: frames compared at 256x256, not 512x512"),
        ({"gt_frame_sizes": [256]}, "fvd", "resolution: ground truth is 256x256 video upscaled"),
        ({"fvd_skipped_clips": 3}, "fvd", "sample count: 3 clips shorter than 16 frames left out"),
    ]
    for change, name, detail in cases:
        changed = {**copy.deepcopy(match), **change}
        text = comparison(changed, scalars)[name]["comparable"]
        assert text.startswith("no: ") and detail in text, (change, text)
    first = copy.deepcopy(match)
    first["metrics"]["fvd"]["clip_sampling"] = "first"
    assert "'first' clip per video, not every non-overlapping clip" in comparison(first, scalars)["fvd"]["comparable"]
    short = copy.deepcopy(match)
    short["metrics"]["sync"]["tracking"]["min_track"] = 50
    assert "crop: min_track 50 (syncnet_python 100)" in comparison(short, scalars)["sync_c"]["comparable"]
    assert comparison({**match, "random_weights": ["sync"]}, scalars) is None


def test_protocol_flag_sets_the_hdtf_settings_and_explicit_flags_win(monkeypatch, tmp_path):
    from pl_modules.commands import main
    from pl_modules.evaluation import offline

    seen = []
    monkeypatch.setattr(offline, "evaluate_checkpoints", lambda c, d, o, cfg, *a, **k: seen.append(cfg) or tmp_path)
    assert main(["evaluate", "x.ckpt", "--data", "d", "--protocol", "hdtf"]) == 0
    assert main(["evaluate", "x.ckpt", "--data", "d", "--protocol", "hdtf", "--max-clips", "5", "--eval-size", "256",
                 "--lip-keypoints", "3", "8"]) == 0
    hdtf, custom = seen
    assert hdtf == EvaluationConfig(protocol="hdtf", metrics=hdtf.metrics, **PROTOCOLS["hdtf"])
    assert (hdtf.eval_size, hdtf.num_clips, hdtf.max_frames, hdtf.fvd_clip_sampling) == (512, 0, 0,
                                                                                          "all_non_overlapping")
    assert (custom.protocol, custom.num_clips, custom.eval_size, custom.max_frames, custom.lips) == (
        "hdtf", 5, 256, 0, (3, 8))
    with pytest.raises(ValueError, match="protocol 'hdtv' unknown"):
        EvaluationConfig.for_protocol("hdtv")


@pytest.mark.slow
def test_cli_hdtf_report_with_the_tiny_renderer(hdtf_assets, eval_assets, tmp_path):
    """The whole command: tiny LivePortrait renders (random weights in the real files) + SyncNet weights file."""
    from pl_modules.commands import main

    a = hdtf_assets
    args = ["evaluate", str(a["exp"]), "--data", str(a["synth"]), "--protocol", "hdtf", "--face-model",
            str(eval_assets["face"]), "--face-model-preset", "tiny", "--metrics", "motion", "sync", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "rand"), "--random-weights"]) == 0
    assert main([*args, "--out", str(tmp_path / "real"), "--syncnet", str(a["syncnet"])]) == 0
    rand, real = (tmp_path / "rand" / "report.md").read_text(), (tmp_path / "real" / "report.md").read_text()
    assert "| protocol | hdtf " in rand and "| comparable |" not in rand
    assert HEADER in real and "weights: renderer is the tiny test preset, not LivePortrait" in real
