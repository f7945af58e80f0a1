"""Stage zero end to end on CPU (tiny random face model, synthetic video): `playmate train configs/stage0.yaml`
fine-tunes M only, held-out L_p on fixed pairs falls, and `playmate export` writes LivePortrait files that
reproduce the trained module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tests.helpers import ROOT, stage0_overrides, write_stage0_inputs

from configs.loader import ConfigError, load_experiment
from models.liveportrait import CHECKPOINT_FILES, FaceModelConfig, frames_to_input, load_face_model
from pl_modules.train import train

FROZEN = ("appearance_extractor", "warping_module", "spade_generator")


def run(overrides: list[str]):
    os.environ["PLAYMATE_PROGRESS"] = "0"
    return train(load_experiment(ROOT / "configs" / "stage0.yaml", overrides))


@pytest.fixture(scope="module")
def stage0_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage0")
    paths = write_stage0_inputs(tmp)
    trainer = run(stage0_overrides(paths, tmp / "run", steps=2, logger="wandb"))  # offline (conftest)
    return paths, tmp, trainer


def test_only_m_trains_the_frozen_modules_stay_bit_identical(stage0_run) -> None:
    paths, tmp, trainer = stage0_run
    assert trainer.global_step == 2 and (tmp / "run" / "checkpoints" / "last.ckpt").is_file()
    face = trainer.lightning_module.face
    for attr, fname in CHECKPOINT_FILES.items():
        start = torch.load(paths["face"] / "base_models" / fname, weights_only=True)
        now = getattr(face, attr).state_dict()
        same = all(torch.equal(now[k], v) for k, v in start.items())
        assert same == (attr in FROZEN), attr  # F, W, G unchanged to the bit; M moved
    trained = {id(p) for p in face.motion_extractor.parameters()}
    assert {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]} == trained
    m = trainer.callback_metrics
    s0 = trainer.lightning_module.cfg.stage0
    total = sum(getattr(s0, f"w_{k}") * m[f"train/{k}"]
                for k in ("cross", "rec_l1", "rec_perc", "equivariance", "deformation", "pose_anchor"))
    torch.testing.assert_close(m["train/loss"], total)  # every documented term, with its weight
    assert m["data/bad_samples"] == 0 and m["data/samples_read"] > 0


def test_heldout_lp_on_fixed_pairs_falls_and_the_probe_is_logged_before_and_after(stage0_run) -> None:
    _, _, trainer = stage0_run
    before = trainer.lightning_module.initial_val  # validation at step 0 (the same fixed pairs)
    after = {k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    print(f"stage zero, 2 steps: held-out L_p {before['lp']:.4f} → {after['lp']:.4f}; exp_leak "
          f"{before['exp_leak']:.3f} → {after['exp_leak']:.3f}; pose_leak {before['pose_leak']:.3f} → "
          f"{after['pose_leak']:.3f}")
    assert set(before) == set(after) >= {"lp", "rec_l1", "rec_perc", "exp_leak", "pose_leak", "exp_drift"}
    assert after["lp"] < 0.95 * before["lp"]


def test_a_second_invocation_resumes(stage0_run, tmp_path: Path) -> None:
    import shutil

    paths, tmp, first = stage0_run
    shutil.copytree(tmp / "run", tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    trainer = run(stage0_overrides(paths, tmp_path / "run", steps=3, **{"trainer.val_every_n_steps": "2"}))
    assert trainer.global_step == 3 and trainer.ckpt_path.endswith("last.ckpt")
    assert {int(s["step"]) for s in trainer.optimizers[0].state.values()} == {3}  # Adam continued from step 2
    assert trainer.lightning_module.initial_val == first.lightning_module.initial_val  # from the checkpoint


def test_wandb_images_of_the_cross_transfer_pairs_at_step_0_and_after(stage0_run) -> None:
    import numpy as np
    from PIL import Image

    _, tmp, _ = stage0_run
    images = sorted((tmp / "run" / "wandb").rglob("cross_transfer_*.png"))
    assert len(images) == 2  # validation at step 0 and at step 2
    for f in images:  # one row per pair (1), five 128² columns: i, j, Î^rec_j, Î^pose_{i,j}, Î^exp_{j,i}
        assert np.asarray(Image.open(f)).shape[:2] == (128, 5 * 128)


def test_export_writes_liveportrait_files_that_reproduce_the_module(stage0_run, tmp_path: Path) -> None:
    from pl_modules.commands import main

    paths, tmp, trainer = stage0_run
    assert main(["export", str(tmp / "run" / "checkpoints" / "last.ckpt"), str(tmp_path / "exp")]) == 0
    assert sorted(p.name for p in (tmp_path / "exp" / "base_models").iterdir()) == sorted(CHECKPOINT_FILES.values())
    exported = load_face_model(tmp_path / "exp", cfg=FaceModelConfig.tiny())  # strict public-layout loading
    info = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert info["global_step"] == 2 and info["weights"]["motion_extractor"] == "trained (EMA)"
    assert all(info["weights"][a].endswith(CHECKPOINT_FILES[a]) for a in FROZEN)  # copied from the start files
    face = trainer.lightning_module.face
    for attr in CHECKPOINT_FILES:
        own = getattr(face, attr).state_dict()
        assert all(torch.equal(v, own[k]) for k, v in getattr(exported, attr).state_dict().items()), attr
    x = frames_to_input(torch.randint(0, 256, (1, 256, 256, 3), dtype=torch.uint8))[..., ::2, ::2]  # 128² (cheaper)
    with torch.no_grad():
        a, b = face.motion_extractor(x), exported.motion_extractor(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
        kp = torch.rand(1, 21, 3) - 0.5
        f = face.appearance_extractor(x)
        assert torch.equal(face.warp_decode(f, kp, kp * 0.9), exported.warp_decode(exported.appearance_extractor(x),
                                                                                    kp, kp * 0.9))


def test_config_errors_name_the_key(stage0_run, tmp_path: Path) -> None:
    from pl_modules.commands import main
    from pl_modules.stage0 import StageZeroModule

    paths, tmp, _ = stage0_run
    with pytest.raises(ConfigError, match=r"^stage0\.trainable: .*'motion_extractr'.*choose from"):
        load_experiment(ROOT / "configs" / "stage0.yaml", stage0_overrides(paths, tmp_path, **{
            "stage0.trainable": "[motion_extractr]"}))
    with pytest.raises(ConfigError, match=r"^stage0\.vgg_weights: stage zero needs it"):
        load_experiment(ROOT / "configs" / "stage0.yaml", stage0_overrides(paths, tmp_path, **{
            "stage0.vgg_weights": "null"}))
    full = load_experiment(ROOT / "configs" / "stage0.yaml", stage0_overrides(paths, tmp_path, **{
        "stage0.face_model_preset": "full"}))
    with pytest.raises(ConfigError, match=r"^stage0\.face_model_dir=.*shape mismatch.*face_model_preset=full"):
        StageZeroModule(full)  # tiny files, full-size model
    args = ["train", str(ROOT / "configs" / "stage0.yaml"), *stage0_overrides(paths, tmp_path, **{
        "stage0.face_model_dir": str(tmp_path / "none")})]
    assert main(args) == 2
