"""DeepSpeed: config path on CPU, checkpoint conversion/export on CPU (gloo), full training on a GPU."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from configs.loader import ConfigError, load_experiment
from configs.schema import ExperimentConfig
from pl_modules.strategy import build_strategy, deepspeed_bucket_size

ROOT = Path(__file__).resolve().parents[2]


def _cfg(*ov: str) -> ExperimentConfig:
    return load_experiment(ROOT / "configs" / "stage1.yaml", ["data.train_shards=[x]", "data.val_shards=[]",
                                                              "audio.name=mel", *ov])


def test_deepspeed_strategy_from_config():
    cfg = _cfg("trainer=deepspeed_stage_2", "data.batch_size=64", "trainer.devices=8")
    s = build_strategy(cfg, per_rank_batch=8)
    from lightning.pytorch.strategies import DeepSpeedStrategy

    assert isinstance(s, DeepSpeedStrategy) and type(s).__name__ == "AtomicDeepSpeedStrategy"
    zero = s.config["zero_optimization"]
    bucket = deepspeed_bucket_size(cfg)  # auto: a quarter of B's trainable parameters
    assert zero["stage"] == 2 and zero["reduce_bucket_size"] == bucket and zero["allgather_bucket_size"] == bucket
    assert 1.5e7 < bucket < 2.5e7
    assert s.config["train_micro_batch_size_per_gpu"] == 8
    stage3 = build_strategy(_cfg("trainer=deepspeed_stage_3", "trainer.devices=8"), 8)
    assert stage3.config["zero_optimization"]["stage"] == 3


def test_deepspeed_on_cpu_is_refused_before_anything_starts():
    with pytest.raises(ConfigError, match="trainer.strategy: deepspeed_stage_2 needs CUDA"):
        _cfg("trainer=cpu", "trainer.strategy=deepspeed_stage_2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero2_checkpoint_exports_to_fp32_on_cpu(tmp_path: Path, monkeypatch):
    """2-process ZeRO-2 (gloo) checkpoint in Lightning's layout → `playmate export` → the trained weights."""
    import torch.multiprocessing as mp

    from pl_modules.checkpoints import build_model, read_checkpoint
    from pl_modules.commands import main
    from tests.train.deepspeed_worker import run

    monkeypatch.chdir(ROOT)
    g = torch.Generator().manual_seed(0)
    batch = {"motion": torch.randn(4, 125, 70, generator=g), "audio": torch.randn(4, 125 * 640, generator=g) * 0.1,
             "kp": torch.randn(4, 21, 3, generator=g), "ref_motion": torch.randn(4, 70, generator=g),
             "has_context": torch.ones(4, dtype=torch.bool), "emotion": torch.full((4,), 8)}
    ckpt = tmp_path / "step2.ckpt"
    mp.spawn(run, args=(2, _free_port(), str(ckpt), batch), nprocs=2, join=True)
    assert (ckpt / "checkpoint" / "mp_rank_00_model_states.pt").is_file()
    assert len(list((ckpt / "checkpoint").glob("zero_pp_rank_*_optim_states.pt"))) == 2
    assert main(["export", str(ckpt), str(tmp_path / "exp")]) == 0
    model = build_model(read_checkpoint(tmp_path / "exp"))
    live = json.loads((tmp_path / "live.json").read_text())
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.allclose(v.flatten()[:8], torch.tensor(live[k]), atol=1e-6), k
    moved = model.state_dict()["pose_mlp.2.weight"].abs().sum()
    assert moved > 0  # zero-initialised output layer: trained


@pytest.mark.gpu
@pytest.mark.deepspeed
def test_deepspeed_stage2_bf16_trains_resumes_exports_on_gpu(tmp_path: Path):
    from pl_modules.checkpoints import build_model, read_checkpoint
    from pl_modules.train import train
    from tests.helpers import write_random_dataset

    write_random_dataset(tmp_path / "ds", clips=8, per_shard=2)
    ov = ["model=B", "trainer=deepspeed_stage_2", "trainer.devices=1", "logger=none", f"run_dir={tmp_path / 'run'}",
          f"data.train_shards=[{tmp_path / 'ds'}]", "data.batch_size=8", "data.num_workers=2",
          "trainer.ckpt_every_n_steps=5", "trainer.val_every_n_steps=0"]
    t1 = train(load_experiment(ROOT / "configs" / "stage1.yaml", [*ov, "trainer.max_steps=10"]))
    assert t1.global_step == 10 and (tmp_path / "run" / "checkpoints" / "last.ckpt" / "checkpoint").is_dir()
    t2 = train(load_experiment(ROOT / "configs" / "stage1.yaml", [*ov, "trainer.max_steps=15"]))
    assert t2.global_step == 15
    model = build_model(read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
