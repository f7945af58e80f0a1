"""`playmate shards reextract` (datamodules/reextract.py): motion from the face model on each clip's mp4,
everything else of a sample kept, the shard contract met, resumable, and the result trains stage one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import ROOT, tiny_overrides

import datamodules.reextract as rx
from datamodules.contract import decode_sample, pose_statistics
from datamodules.shards import check_dataset, iter_tar_samples
from datamodules.synthetic import synthesize_dataset
from datamodules.video import decode_frames
from models.liveportrait import FaceModelConfig, load_face_model
from models.liveportrait.testing import write_random_weights
from pl_modules.commands import main
from models.motion import EXP


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("reextract")
    write_random_weights(tmp / "face", seed=3, cfg="tiny")
    synthesize_dataset(tmp / "src", clips=4, seed=0, min_seconds=1.0, max_seconds=1.2, maxcount=2)
    return tmp / "src", tmp / "face"


def samples(d: Path) -> dict[str, dict]:
    manifest = json.loads((d / "manifest.json").read_text())
    return {raw["__key__"]: raw for s in manifest["shards"] for raw in iter_tar_samples(d / s["name"])}


def test_motion_comes_from_m_on_the_mp4_and_everything_else_is_kept(source, tmp_path: Path) -> None:
    src, face_dir = source
    args = ["shards", "reextract", str(src), str(tmp_path / "dst"), "--face-model", str(face_dir), "--face-preset",
            "tiny", "--device", "cpu"]
    assert main(args) == 0
    problems, summary = check_dataset(tmp_path / "dst")  # hashes, counts, contract, mp4 frame counts
    assert problems == [] and summary["samples"] == 4
    before, after = samples(src), samples(tmp_path / "dst")
    assert list(before) == list(after)  # same clips, same order
    m_src, m_dst = (json.loads((d / "manifest.json").read_text()) for d in (src, tmp_path / "dst"))
    assert [(s["name"], s["count"]) for s in m_src["shards"]] == [(s["name"], s["count"]) for s in m_dst["shards"]]
    assert m_dst["provenance"]["reextracted"]["face_model_preset"] == "tiny"
    face = load_face_model(face_dir, cfg=FaceModelConfig.tiny())
    for key, raw in after.items():
        new, old = decode_sample(raw, verify_all=True), decode_sample(before[key], verify_all=True)
        motion, kp = face.extract_motion(decode_frames(raw["mp4"]))
        assert np.array_equal(new["motion"], motion.numpy()) and np.array_equal(new["kp"], kp[0].numpy())
        assert not np.array_equal(new["motion"], old["motion"])  # the synthetic ground truth was replaced
        assert new["meta"] == {**old["meta"], **pose_statistics(new["motion"])}
        for member in ("wav", "mp4"):
            assert raw[member] == before[key][member]
    stats = json.loads((tmp_path / "dst" / "stats.json").read_text())
    exp = np.concatenate([decode_sample(r)["motion"][:, EXP] for r in after.values()]).astype(np.float64)
    np.testing.assert_allclose(stats["exp_mean"], exp.mean(0), rtol=1e-6, atol=1e-9)
    assert stats["num_clips"] == 4


def test_a_killed_run_resumes_without_redoing_finished_shards(source, tmp_path: Path, monkeypatch) -> None:
    src, face_dir = source
    dst = tmp_path / "dst"
    done: list[int] = []
    shard = rx._shard

    def dies_on_second_shard(face, src, dst, work, k, entry, batch_size):
        if k == 1:
            raise KeyboardInterrupt  # a kill between shards
        done.append(k)
        return shard(face, src, dst, work, k, entry, batch_size)

    monkeypatch.setattr(rx, "_shard", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        rx.reextract_motion(src, dst, face_dir, "tiny")
    first = dst / "synth-s0-000000.tar"
    assert first.is_file() and not (dst / "manifest.json").exists()
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(rx, "_shard", lambda *a: (done.append(a[4]), shard(*a))[1])
    with pytest.raises(FileExistsError, match="other \\['face_model_preset'\\]"):
        rx.reextract_motion(src, dst, face_dir, "full")  # another face model cannot continue this run
    rx.reextract_motion(src, dst, face_dir, "tiny")
    assert done == [0, 1] and first.stat().st_mtime_ns == stamp  # shard 0 was not redone
    assert check_dataset(dst, check_video=False)[0] == [] and not (dst / ".reextract").exists()
    rx.reextract_motion(src, dst, face_dir, "tiny")  # a finished dataset: nothing to do
    assert done == [0, 1]


def test_reextracted_shards_train_stage_one(source, tmp_path: Path) -> None:
    from configs.loader import load_experiment
    from pl_modules.train import train

    src, face_dir = source
    rx.reextract_motion(src, tmp_path / "dst", face_dir, "tiny")
    os.environ["PLAYMATE_PROGRESS"] = "0"
    cfg = load_experiment(ROOT / "configs" / "stage1.yaml", tiny_overrides(
        tmp_path / "dst", tmp_path / "run", steps=2, **{"model.t_window": "16", "model.tp": "4",
                                                         "trainer.val_every_n_steps": "2", "data.num_workers": "1"}))
    trainer = train(cfg)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
