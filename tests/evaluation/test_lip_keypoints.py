"""The lip keypoints of the mouth-opening signal: configurable (eval.lip_keypoints, validated), found from
data (`playmate shards lips DIR`) on the synthetic world, where the true lips are known, and named in
the protocol of every evaluation and in validation's log line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs.evaluation import NUM_KEYPOINTS, EvaluationConfig
from datamodules.synthetic import LOWER_LIP, UPPER_LIP, synthesize_clip, synthesize_dataset
from metrics.motion import MotionMetrics, lip_keypoint_scores, mouth_audio_correlation
from models.motion import NUM_KP
from models.motion import EXP


def world_clips(n: int = 4, seed: int = 0):
    emotions = [None, "happy", "surprised", "angry", "sad", "fear"]
    return [synthesize_clip(seed, i, emotion=emotions[i % 6], intensity=None if i % 6 == 0 else 2,
                            min_seconds=3, max_seconds=4, video=False) for i in range(n)]


def permute_keypoints(motion: np.ndarray, kp: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same world with keypoint k stored at index inv[k] (new index i holds old keypoint perm[i])."""
    m = motion.copy()
    m[:, EXP] = motion[:, EXP].reshape(-1, NUM_KP, 3)[:, perm].reshape(-1, NUM_KP * 3)
    return m, kp[perm]


def test_synthetic_lips_are_found_and_follow_a_permutation():
    clips = world_clips()
    scores = lip_keypoint_scores((c.motion, c.kp, c.wav) for c in clips)
    assert scores.suggest() == (UPPER_LIP, LOWER_LIP) and scores.num_clips == 4
    assert scores.pair_r[UPPER_LIP, LOWER_LIP] > 0.99  # the world's mouth follows the envelope at lag 0
    np.testing.assert_allclose(scores.pair_r, -scores.pair_r.T, atol=1e-12)  # upper/lower swapped: −r
    assert scores.kp_r[LOWER_LIP] > 0.9 and scores.kp_r[UPPER_LIP] < -0.9  # lower lip drops, upper rises
    # a data-driven answer: relabel the keypoints and the suggestion follows the lips to their new indices
    perm = np.random.default_rng(7).permutation(NUM_KP)
    moved = lip_keypoint_scores((*permute_keypoints(c.motion, c.kp, perm), c.wav) for c in clips)
    upper, lower = moved.suggest()
    assert (perm[upper], perm[lower]) == (UPPER_LIP, LOWER_LIP)
    # silent audio carries no information: such clips are left out, none at all is an error
    silent = [(c.motion, c.kp, np.zeros_like(c.wav)) for c in clips]
    with pytest.raises(ValueError, match="no clip"):
        lip_keypoint_scores(silent)


def test_configured_lips_drive_the_mouth_signal():
    clip = world_clips(1)[0]
    m, kp, wav = torch.from_numpy(clip.motion), torch.from_numpy(clip.kp), torch.from_numpy(clip.wav)
    r_true = mouth_audio_correlation(m, kp, wav, lips=(UPPER_LIP, LOWER_LIP))[0]
    r_eyes = mouth_audio_correlation(m, kp, wav, lips=(6, 7))[0]  # left eye lids: blinks, not speech
    assert r_true > 0.95 and abs(r_eyes) < 0.5
    metric = MotionMetrics(lips=(6, 7))
    metric.update(m[None], kp[None], wav[None])
    assert float(metric.compute()["mouth_audio_r"]) == pytest.approx(r_eyes, abs=1e-12)
    assert metric.protocol()["lip_keypoints"] == {"upper": 6, "lower": 7}


def test_lip_keypoints_config_is_validated():
    assert NUM_KEYPOINTS == NUM_KP and EvaluationConfig().lips == (UPPER_LIP, LOWER_LIP)
    assert EvaluationConfig(lip_keypoints=[3, 8]).lips == (3, 8)
    for bad in ([19], [19, 19], [19, 21], [-1, 4], [1.5, 2], "19,20"):
        with pytest.raises(ValueError, match=r"lip_keypoints .* \[upper, lower\]"):
            EvaluationConfig(lip_keypoints=bad)


def test_lip_keypoints_from_a_training_config(tmp_path):
    from configs.loader import ConfigError, load_experiment
    from tests.helpers import tiny_overrides

    cfg = load_experiment("configs/stage1.yaml", tiny_overrides() + ["eval.lip_keypoints=[4,9]"])
    assert cfg.eval.lips == (4, 9)
    with pytest.raises(ConfigError, match=r"eval\.lip_keypoints: lip_keypoints \[4, 40\] is invalid"):
        load_experiment("configs/stage1.yaml", tiny_overrides() + ["eval.lip_keypoints=[4,40]"])


def test_shards_lips_command(tmp_path, capsys):
    from pl_modules.commands import main

    synthesize_dataset(tmp_path / "syn", 3, seed=5, min_seconds=2, max_seconds=3, video=False)
    assert main(["shards", "lips", str(tmp_path / "syn"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"1. upper {UPPER_LIP}, lower {LOWER_LIP}:" in out and "rank 1 of 420" in out
    assert f"suggested: lip_keypoints [{UPPER_LIP}, {LOWER_LIP}]" in out and "3 clips" in out
    assert main(["shards", "lips", str(tmp_path / "syn"), "--lip-keypoints", "6", "7"]) == 0
    assert "configured lip_keypoints [6, 7]" in capsys.readouterr().out
    assert main(["shards", "lips", str(tmp_path / "syn"), "--lip-keypoints", "3", "3"]) == 2
    assert "lip_keypoints [3, 3] is invalid" in capsys.readouterr().err
    assert main(["shards", "lips", str(tmp_path / "missing")]) == 2


def test_validation_and_evaluation_name_the_lips(eval_assets):
    from datamodules.clips import load_clips
    from pl_modules.evaluation.evaluator import Evaluator
    from pl_modules.inference.generator import MotionGenerator
    from pl_modules.validation import lips_protocol, motion_validation_metrics

    clip = world_clips(1)[0]
    out = {"gen": torch.from_numpy(clip.motion)[None], "gt": torch.from_numpy(clip.motion)[None],
           "kp": torch.from_numpy(clip.kp)[None], "wav": torch.from_numpy(clip.wav)[None]}
    assert motion_validation_metrics([out])["mouth_audio_r"] > 0.95
    assert abs(motion_validation_metrics([out], lips=(6, 7))["mouth_audio_r"]) < 0.5
    assert "y[kp 7] − y[kp 6]" in lips_protocol((6, 7)) and "eval.lip_keypoints = [6, 7]" in lips_protocol((6, 7))
    cfg = EvaluationConfig(num_clips=1, max_frames=20, lip_keypoints=[6, 7])
    res = Evaluator(cfg).run(MotionGenerator.from_checkpoint(eval_assets["exp1"]),
                             load_clips([str(eval_assets["ds"])], 1, 20))
    assert res.protocol["metrics"]["motion"]["lip_keypoints"] == {"upper": 6, "lower": 7}
    assert res.protocol["settings"]["lip_keypoints"] == [6, 7] and res.samples[0]["lips"] == (6, 7)
