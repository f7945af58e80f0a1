"""The synthetic world: contract-valid shards, determinism, and the documented relations on ground truth."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.contract import EMOTIONS, SAMPLES_PER_FRAME, decode_sample
from datamodules.shards import check_dataset, iter_tar_samples
from datamodules.synthetic import (
    ENV_REF,
    EXP_NOISE,
    MOUTH_GAIN,
    POSE_MAX_DEV,
    audio_envelope,
    clip_plan,
    emotion_expression,
    synth_audio,
    synthesize_clip,
    synthesize_dataset,
)
from models.motion import ANGLE_LIMIT_DEG, mouth_opening, transform_keypoints


def _keys(d: Path) -> list[str]:
    return [s["__key__"] for tar in sorted(d.glob("*.tar")) for s in iter_tar_samples(tar)]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def _mouth(kp: np.ndarray, motion: np.ndarray, rest_pose: bool) -> np.ndarray:
    m = torch.from_numpy(motion).double()
    if rest_pose:  # identity rotation, no translation, unit scale: only δ moves the lips
        m[:, 63:69] = 0.0
        m[:, 69] = 1.0
    return mouth_opening(transform_keypoints(torch.from_numpy(kp).double(), m)).numpy()


@pytest.fixture(scope="module")
def gt_clips() -> list:
    """Two worlds (seeds 0 and 1) of 16 short labelled clips each, without video."""
    out = []
    for seed in (0, 1):
        for p in clip_plan(seed, 16, emotions=True, identities=4):
            out.append(synthesize_clip(seed, p["index"], p["identity"], p["emotion"], p["intensity"],
                                       min_seconds=2.0, max_seconds=3.0, video=False))
    return out


def test_dataset_valid_deterministic_and_seeded(tmp_path: Path) -> None:
    kw = dict(clips=4, emotions=True, min_seconds=1.0, max_seconds=1.6, maxcount=2)
    m1 = synthesize_dataset(tmp_path / "a", seed=0, **kw)
    m2 = synthesize_dataset(tmp_path / "b", seed=0, **kw)
    problems, summary = check_dataset(tmp_path / "a")
    assert problems == [] and summary == {"shards": 2, "samples": 4, "bad_samples": 0}
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert m1["provenance"]["seed"] == 0 and m1["num_samples"] == 4
    synthesize_dataset(tmp_path / "c", seed=1, **{**kw, "emotions": False}, video=False)
    assert check_dataset(tmp_path / "c")[0] == []
    assert not set(_keys(tmp_path / "a")) & set(_keys(tmp_path / "c"))
    with tarfile.open(tmp_path / "c" / m1["shards"][0]["name"].replace("s0", "s1")) as tar:
        names = tar.getnames()
    assert not any(n.endswith(".mp4") for n in names)


def test_sample_members_and_metadata(tmp_path: Path) -> None:
    synthesize_dataset(tmp_path / "d", clips=2, seed=3, min_seconds=1.0, max_seconds=1.2, identities=1)
    raws = list(iter_tar_samples(next((tmp_path / "d").glob("*.tar"))))
    for raw in raws:
        s = decode_sample(raw, verify_all=True)
        t = s["motion"].shape[0]
        assert s["wav"].shape == (t * SAMPLES_PER_FRAME,) and s["wav"].dtype == np.int16
        assert s["meta"]["emotion"] is None and s["meta"]["intensity"] is None
        assert s["meta"]["speaker_id"] == "s3_id0000" and "s3_" in s["meta"]["clip_id"]
        assert len(raw["mp4"]) > 1000
    np.testing.assert_array_equal(decode_sample(raws[0])["kp"], decode_sample(raws[1])["kp"])  # same identity


def test_mouth_follows_envelope(gt_clips: list) -> None:
    for c in gt_clips:
        env = audio_envelope(c.wav, c.motion.shape[0])
        assert _pearson(_mouth(c.kp, c.motion, rest_pose=True), env) >= 0.9
        assert _pearson(_mouth(c.kp, c.motion, rest_pose=False), env) >= 0.9
        # the documented gain: lower minus upper lip δ_y is exactly MOUTH_GAIN·env/ENV_REF + noise + emotion
        gap = c.motion[:, 20 * 3 + 1] - c.motion[:, 19 * 3 + 1]
        slope = np.polyfit(env, gap, 1)[0]
        assert slope == pytest.approx(MOUTH_GAIN / ENV_REF, rel=0.05)


def test_emotion_patterns_are_recognisable(gt_clips: list) -> None:
    def features(clips: list) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([c.motion[:, :63].mean(0) for c in clips])
        y = np.array([EMOTIONS.index(c.meta["emotion"]) for c in clips])
        return x, y

    x_tr, y_tr = features(gt_clips[:16])  # seed 0
    x_te, y_te = features(gt_clips[16:])  # seed 1: other identities, other audio
    centroids = np.stack([x_tr[y_tr == k].mean(0) for k in range(len(EMOTIONS))])
    pred = np.linalg.norm(x_te[:, None] - centroids[None], axis=-1).argmin(1)
    assert (pred == y_te).mean() >= 0.95
    pats = np.stack([emotion_expression(e, 1) for e in EMOTIONS[1:]])
    dist = np.linalg.norm(pats[:, None] - pats[None], axis=-1) + np.eye(len(pats))
    assert dist.min() > 20 * EXP_NOISE


def test_pose_stays_near_rest(gt_clips: list) -> None:
    for c in gt_clips:
        rest = np.asarray(c.meta["synth"]["rest_pose"])
        pose = c.motion[:, 63:70]
        assert np.all(np.abs(pose - rest) <= POSE_MAX_DEV + 1e-5)
        assert np.abs(pose[:, :3]).max() < ANGLE_LIMIT_DEG / 2
        assert np.abs(np.diff(pose[:, :3], axis=0)).max() < 2.0  # smooth: < 2° per frame


def test_synth_audio() -> None:
    a = synth_audio(1.5, seed=7)
    assert a.dtype == np.int16 and a.shape == (round(1.5 * 25) * SAMPLES_PER_FRAME,)
    np.testing.assert_array_equal(a, synth_audio(1.5, seed=7))
    assert not np.array_equal(a, synth_audio(1.5, seed=8))
    s = synth_audio(2.0, seed=7, singing=True)
    assert s.shape == (50 * SAMPLES_PER_FRAME,) and np.abs(s).max() > 1000


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pl_modules.commands import main

    args = ["synth", "--out", str(tmp_path / "s"), "--clips", "2", "--no-video", "--seed", "5",
            "--min-seconds", "1", "--max-seconds", "1.2", "--emotions", "--singing"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["num_samples"] == 2 and manifest["provenance"]["singing"] is True
    assert check_dataset(tmp_path / "s")[0] == []
    assert main(["synth", "--out", str(tmp_path / "x"), "--clips", "0"]) == 2
    assert "--clips" in capsys.readouterr().err
