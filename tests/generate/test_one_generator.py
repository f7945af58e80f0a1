"""Generation has one implementation: `playmate generate`, evaluation and validation produce the same
motion for the same checkpoint, audio, reference and seed."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import tiny_config, write_checkpoint, write_random_dataset

from configs.evaluation import EvaluationConfig
from datamodules.clips import load_clips
from datamodules.motion_wds import MotionDataModule, load_motion_stats
from pl_modules.checkpoints import read_checkpoint
from pl_modules.commands import main as cli
from pl_modules.evaluation.evaluator import Evaluator
from pl_modules.inference.generator import MotionGenerator, clip_seed
from pl_modules.inference.inputs import Reference
from pl_modules.module import MotionDiffusionModule
from models.weights import load_strict

T = 16  # model.t_window: one window per validation clip


def _write_wav(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module", params=["stage1", "stage2"])
def setup(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onegen")
    ds = tmp / "ds"
    write_random_dataset(ds, clips=3, per_shard=1, frames=40, emotions=True)
    extra = {"model.t_window": str(T), "model.tp": "4", "data.val_batch_size": "1"}
    if request.param == "stage2":  # the controller is attached and randomised; nothing is loaded from init_from
        extra["stage2.init_from"] = "unused"
    cfg = tiny_config(ds, f"{request.param}.yaml", **extra)
    stats = load_motion_stats([str(ds)])
    return tmp, ds, cfg, write_checkpoint(tmp / "ckpt", cfg, stats, seed=3)


def test_generate_evaluation_and_validation_give_identical_motion(setup):
    tmp, ds, cfg, export = setup
    stage_two = cfg.stage == "stage2"
    # validation: the training module (weights of the checkpoint) on the datamodule's validation batch
    ckpt = read_checkpoint(export)
    module = MotionDiffusionModule(cfg, ckpt.stats)
    module.configure_model()
    load_strict(module.model, ckpt.weights(), "test")
    module.log = lambda *a, **k: None  # no trainer here
    dm = MotionDataModule(cfg.data, t_window=T, tp=cfg.model.tp)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    module.eval()
    module.validation_step(batch, 0)
    key = batch["key"][0]
    validation = module.val_outputs[0]["gen"][0]  # (T, 70) raw
    # evaluation: the first clip, cut to T frames, same base seed
    eval_cfg = EvaluationConfig(num_clips=1, max_frames=T, sample_seed=cfg.eval.sample_seed, metrics=["motion"],
                                num_videos=1)
    clips = load_clips([str(ds)], 1, T)
    assert clips[0].key == key
    evaluation = Evaluator(eval_cfg).run(MotionGenerator.from_checkpoint(export), clips).samples[0]["gen_motion"]
    # `playmate generate`: the clip's audio as a wav file, its first frame as the reference .npz
    wav = _write_wav(tmp / "clip.wav", batch["wav"][0].numpy())
    ref = tmp / "ref.npz"
    np.savez(ref, motion=batch["ref_raw"][0].numpy(), kp=batch["kp"][0].numpy())
    out = tmp / "gen.npy"
    seed = clip_seed(cfg.eval.sample_seed, key)
    emotion = clips[0].meta["emotion"] if stage_two else None  # validation/evaluation: the clip's own label
    args = ["--emotion", emotion] if emotion else []
    assert cli(["generate", str(export), "--audio", str(wav), "--reference", str(ref), "--seed", str(seed),
                "--out", str(out), *args]) == 0
    generated = torch.from_numpy(np.load(out))
    assert validation.shape == evaluation.shape == generated.shape == (T, 70)
    assert torch.equal(evaluation, generated)
    assert torch.equal(validation, generated)
    ref = Reference(batch["ref_raw"][0], batch["kp"][0])
    other = MotionGenerator.from_checkpoint(export).generate(batch["wav"][0], ref, seed=seed + 1, emotion=emotion)
    assert not torch.allclose(other, generated)  # the seed matters: the equality above is not vacuous
