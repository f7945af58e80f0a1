"""EvaluationCallback in a short Lightning fit on CPU: eval/ scalars, W&B table + video, EMA swap,
checkpoints free of metric networks, and a distributed run whose ranks split the clips."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tests.evaluation.conftest import small_config

from configs.evaluation import EvaluationConfig
from pl_modules.evaluation.callback import EvaluationCallback

NET_WORDS = ("inception", "i3d", "sync", "arcface", "iresnet", "fid", "fvd", "csim", "lpips", "metric")


def build(ds: Path, tmp: Path, logger, max_steps: int = 2):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from datamodules.motion_wds import MotionDataModule
    from pl_modules.callbacks import EMACallback
    from pl_modules.module import MotionDiffusionModule

    cfg = small_config(ds, **{"data.batch_size": "2", "data.num_workers": "0", "data.epoch_windows": "8",
                             "trainer.max_steps": str(max_steps), "optim.warmup_steps": "1"})
    dm = MotionDataModule(cfg.data, t_window=cfg.model.t_window, tp=cfg.model.tp, seed=0)
    dm.setup("fit")
    module = MotionDiffusionModule(cfg, dm.stats)
    cb = EvaluationCallback(EvaluationConfig(num_clips=2, max_frames=20, num_videos=1), [str(ds)], every_n_steps=2)
    ckpt = ModelCheckpoint(dirpath=tmp / "ckpts", every_n_train_steps=2, save_last=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=-1, limit_val_batches=0,
                         num_sanity_val_steps=0, logger=logger, enable_progress_bar=False, default_root_dir=str(tmp),
                         callbacks=[ckpt, EMACallback(0.5), cb], enable_model_summary=False)
    return trainer, module, dm, cb


def test_callback_logs_eval_scalars_table_and_video_and_keeps_checkpoints_clean(eval_assets, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="playmate-test", save_dir=str(tmp_path), offline=True)
    trainer, module, dm, cb = build(eval_assets["ds"], tmp_path, logger)
    trainer.fit(module, datamodule=dm)
    m = trainer.callback_metrics
    for k in ("eval/mouth_audio_r", "eval/mouth_audio_r_gt", "eval/exp_acceleration", "eval/num_clips",
              "eval/pose_velocity_ratio", "eval/exp_acceleration_ratio"):
        assert torch.isfinite(m[k]), k
    assert float(m["eval/random_weights"]) == 0.0 and cb.last_result.scalars["num_clips"] == 2
    videos = list((tmp_path / "eval" / "step00000002").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    media = [p.name for p in tmp_path.rglob("*") if "media" in p.parts]
    assert any(n.endswith(".mp4") for n in media) and any(n.endswith(".table.json") for n in media)

    ck = torch.load(tmp_path / "ckpts" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith("model.") for k in ck["state_dict"])
    assert not any(w in k.lower() for k in ck["state_dict"] for w in NET_WORDS)
    assert all(v == {} for k, v in ck["callbacks"].items() if k.startswith("EvaluationCallback"))

    # evaluation uses the EMA weights and puts the trained ones back
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    ema = next(c for c in trainer.callbacks if type(c).__name__ == "EMACallback")
    assert any(not torch.equal(ema.shadow[n], before[n]) for n in ema.shadow)
    cb.evaluate(trainer, module)
    assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def test_callback_without_logger(eval_assets, tmp_path):
    trainer, module, dm, cb = build(eval_assets["ds"], tmp_path, logger=False)
    module.configure_model()
    result = cb.evaluate(trainer, module)  # no fit: Trainer without loggers, rank 0 of 1
    assert np.isfinite(result.scalars["mouth_audio_r"]) and "eval/mouth_audio_r" in trainer.callback_metrics
    with pytest.raises(ValueError, match="every_n_steps"):
        EvaluationCallback(EvaluationConfig(), [str(eval_assets["ds"])], every_n_steps=0)


def _ddp_worker(rank: int, world: int, port: int, ds: str, export: str, out: str) -> None:
    import json
    import os

    import torch.distributed as dist

    from datamodules.clips import load_clips, split_for_rank
    from pl_modules.evaluation.evaluator import Evaluator
    from pl_modules.inference.generator import MotionGenerator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = EvaluationConfig(num_clips=3, max_frames=20, metrics=["motion"])
        clips = split_for_rank(load_clips([ds], cfg.num_clips, cfg.max_frames), rank, world)
        res = Evaluator(cfg).run(MotionGenerator.from_checkpoint(export), clips)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"scalars": res.scalars, "rows": res.per_clip,
                                                             "local": [c.key for c in clips]}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_gloo_evaluation_equals_single_process(eval_assets, tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    from datamodules.clips import load_clips
    from pl_modules.evaluation.evaluator import Evaluator
    from pl_modules.inference.generator import MotionGenerator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(eval_assets["ds"]), str(eval_assets["exp1"]), str(tmp_path)), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert not set(r0["local"]) & set(r1["local"]) and len(r0["local"]) + len(r1["local"]) == 3
    cfg = EvaluationConfig(num_clips=3, max_frames=20, metrics=["motion"])
    single = Evaluator(cfg).run(MotionGenerator.from_checkpoint(eval_assets["exp1"]),
                                load_clips([str(eval_assets["ds"])], 3, 20))
    for r in (r0, r1):
        assert r["scalars"] == pytest.approx(single.scalars, rel=1e-9)
        assert [row["key"] for row in r["rows"]] == sorted(row["key"] for row in single.per_clip)
