"""Training end to end on CPU: checkpoints, resume, export, stage two (SLURM and faults: tests/faults/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tests.helpers import tiny_overrides, write_random_dataset

from configs.loader import load_experiment
from pl_modules.train import train

ROOT = Path(__file__).resolve().parents[2]


def run(config: str, overrides: list[str]):
    os.environ["PLAYMATE_PROGRESS"] = "0"
    return train(load_experiment(ROOT / "configs" / config, overrides))


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    write_random_dataset(tmp / "ds", clips=8, per_shard=2, emotions=True)
    trainer = run("stage1.yaml", tiny_overrides(tmp / "ds", tmp / "run", steps=4))
    return tmp, trainer


def test_stage1_trains_checkpoints_and_logs(stage1_run):
    tmp, trainer = stage1_run
    ckpts = tmp / "run" / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "step00000004.ckpt").is_file()
    assert trainer.global_step == 4
    assert (tmp / "run" / "config.yaml").read_text().count("preset: tiny") == 1
    ck = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert "motion_stats" in ck and not any(k.startswith("audio") and "encoder" in k for k in ck["state_dict"])
    assert torch.isfinite(trainer.callback_metrics["val/mse"])


def test_second_invocation_resumes(stage1_run, tmp_path):
    tmp, _ = stage1_run
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tmp / "run", run_dir)
    before = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema_before = next(v for k, v in before["callbacks"].items() if k.startswith("EMACallback"))["shadow"]
    trainer = run("stage1.yaml", tiny_overrides(tmp / "ds", run_dir, steps=6))
    assert trainer.global_step == 6
    assert trainer.ckpt_path and trainer.ckpt_path.endswith("last.ckpt")
    ema = next(c for c in trainer.callbacks if type(c).__name__ == "EMACallback")
    assert ema._loaded is not None and all(torch.equal(ema._loaded[k], v) for k, v in ema_before.items())
    adam_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert adam_steps == {6}  # optimiser state continued from step 4, not restarted


def test_export_reproduces_outputs(stage1_run, tmp_path):
    from models.dit import Condition
    from pl_modules.checkpoints import build_model, export, read_checkpoint
    from pl_modules.commands import main

    tmp, _ = stage1_run
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), str(tmp_path / "exp")]) == 0
    exported = read_checkpoint(tmp_path / "exp")
    model, cfg, stats = build_model(exported), exported.config, exported.stats
    reference = build_model(read_checkpoint(ckpt))
    sd = read_checkpoint(ckpt).weights()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 100, 70, generator=g)
    cond = Condition(torch.randn(2, 125, 1, 80, generator=g), torch.randn(2, 133, generator=g),
                     torch.randn(2, 25, 70, generator=g))
    t = torch.tensor([10, 500])
    assert torch.equal(model(x, t, cond), reference(x, t, cond))
    assert stats.exp_mean.shape == (63,) and cfg.model.preset == "tiny"
    export(ckpt, tmp_path / "exp_raw", use_ema=False)
    assert not torch.equal(torch.load(tmp_path / "exp_raw" / "model.pt", weights_only=True)["pose_mlp.2.weight"],
                           torch.load(tmp_path / "exp" / "model.pt", weights_only=True)["pose_mlp.2.weight"])


def test_stage2_freezes_stage_one_bit_identical(stage1_run, tmp_path, monkeypatch):
    from pl_modules.checkpoints import export, read_checkpoint
    from pl_modules.module import MotionDiffusionModule

    training_modules: list[set[str]] = []  # names of modules in train mode at each training step
    step = MotionDiffusionModule.training_step

    def recording_step(self, batch, batch_idx):
        training_modules.append({n for n, m in self.model.named_modules() if m.training})
        return step(self, batch, batch_idx)

    monkeypatch.setattr(MotionDiffusionModule, "training_step", recording_step)
    tmp, _ = stage1_run
    exp_dir = export(tmp / "run" / "checkpoints" / "last.ckpt", tmp_path / "exp")
    start = read_checkpoint(exp_dir).weights()
    trainer = run("stage2.yaml", tiny_overrides(tmp / "ds", tmp_path / "run2", steps=5,
                                                 **{"stage2.init_from": str(exp_dir), "optim.lr": "1e-2"}))
    assert len(training_modules) == 5  # including the step after validation (step 4)
    for names in training_modules:  # the frozen network runs without dropout; the controller trains
        assert names and all(n.startswith("emotion_controller") for n in names), sorted(names)[:5]
    model = trainer.lightning_module.model
    after = model.state_dict()
    for k, v in start.items():
        assert torch.equal(after[k], v), k
    ctrl = {id(p) for n, p in model.named_parameters() if n.startswith("emotion_controller.")}
    opt_params = [p for g in trainer.optimizers[0].param_groups for p in g["params"]]
    assert opt_params and {id(p) for p in opt_params} == ctrl
    moved = [n for n, p in model.named_parameters() if n.startswith("emotion_controller.") and p.abs().sum() > 0]
    assert moved  # the controller did train


def test_stage2_rejects_a_mismatched_checkpoint(stage1_run, tmp_path):
    tmp, _ = stage1_run
    with pytest.raises(ValueError, match="do not match the model"):
        run("stage2.yaml", tiny_overrides(tmp / "ds", tmp_path / "r", steps=2, model="S",
                                          **{"stage2.init_from": str(tmp / "run" / "checkpoints" / "last.ckpt")}))
