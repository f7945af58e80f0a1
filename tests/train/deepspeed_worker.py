"""Raw DeepSpeed ZeRO-2 on 2 CPU/gloo processes writing a checkpoint in Lightning's layout.

Run by tests/train/test_deepspeed.py with torch.multiprocessing (a named module: spawn pickles by
name). Lightning's DeepSpeedStrategy refuses CPU, so this reproduces what it writes: the engine
wraps the LightningModule and `engine.save_checkpoint(dir, client_state=<the Lightning checkpoint
without state_dict>, tag="checkpoint")`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def run(rank: int, world: int, port: int, out: str, batch: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    import deepspeed

    from configs.loader import load_experiment
    from models.motion import MotionStats
    from pl_modules.module import MotionDiffusionModule

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    cfg = load_experiment("configs/stage1.yaml", ["model=tiny", "data.train_shards=[x]", "data.val_shards=[]",
                                                  "audio.name=mel"])
    torch.manual_seed(0)
    module = MotionDiffusionModule(cfg, MotionStats.identity())
    module.configure_model()
    module.log = lambda *a, **k: None
    ds_config = {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 1.0,
                 "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True}
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=module, optimizer=opt, config=ds_config)
    mine = {k: v[rank * 2 : rank * 2 + 2] if torch.is_tensor(v) else v for k, v in batch.items()}
    for _ in range(2):
        loss = module.training_step(mine, 0)
        engine.backward(loss)
        engine.step()
    client = {"hyper_parameters": dict(module.hparams), "motion_stats": module.stats.to_dict(), "global_step": 2,
              "callbacks": {}}
    engine.save_checkpoint(out, client_state=client, tag="checkpoint")
    if rank == 0:  # the live fp32 weights after training, to compare with the export
        Path(out).parent.joinpath("live.json").write_text(json.dumps(
            {k: v.detach().float().flatten()[:8].tolist() for k, v in module.model.state_dict().items()}))
