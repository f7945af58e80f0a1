"""Two-process DDP (gloo) gives the same losses as one process on the same global batch."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import lightning.pytorch as pl
import torch
from tests.helpers import tiny_config, write_random_dataset
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.motion_wds import load_motion_stats
from datamodules.windows import WindowMaker, collate_windows
from datamodules.shards import iter_tar_samples
from datamodules.contract import decode_sample
from models.diffusion.loss import training_loss
from models.dit import Drops
from pl_modules.module import MotionDiffusionModule

ROOT = Path(__file__).resolve().parents[2]


class FixedWindows(Dataset):
    """The first window of every clip of a dataset, in a fixed order."""

    def __init__(self, ds: Path) -> None:
        maker = WindowMaker(load_motion_stats([str(ds)]), 100, 25, "wav")
        self.items = [maker.window(decode_sample(s), 25)
                      for tar in sorted(ds.glob("*.tar")) for s in iter_tar_samples(tar)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class ReplayModule(MotionDiffusionModule):
    """The training module with diffusion noise and timestep drawn from each sample's key and the step."""

    def __init__(self, cfg, stats, out: str) -> None:
        super().__init__(cfg, stats)
        self.out = out
        self.losses: list[float] = []

    def configure_model(self) -> None:
        torch.manual_seed(0)
        super().configure_model()

    def training_step(self, batch, batch_idx):
        x0 = batch["motion"][:, 25:]
        gens = [torch.Generator().manual_seed(zlib.crc32(f"{k}/{self.global_step}".encode())) for k in batch["key"]]
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
        t = torch.stack([torch.randint(0, 1000, (), generator=g) for g in gens])
        drops = Drops(context=~batch["has_context"])
        out = training_loss(self.model, self.schedule, x0, self.condition(batch), drops, t=t, noise=noise)
        self.losses.append(float(self.all_gather(out["loss"].detach()).mean()))
        return out["loss"]

    def train_dataloader(self) -> DataLoader:
        # rank r takes samples r, r + world, …: the union of a step's rank batches is the single
        # process's batch of that step (Lightning's own sampler would shuffle)
        ds = FixedWindows(Path(self.cfg.data.train_shards[0]))
        world = self.trainer.world_size
        sampler = DistributedSampler(ds, num_replicas=world, rank=self.global_rank, shuffle=False)
        return DataLoader(ds, batch_size=8 // world, sampler=sampler, collate_fn=collate_windows)

    def on_train_end(self) -> None:
        if self.global_rank == 0:
            Path(self.out).write_text(json.dumps(self.losses))


def _fit(ds: Path, out: Path, devices: int) -> list[float]:
    cfg = tiny_config(ds, **{"model.dropout": "0.0", "model.audio_dropout_prob": "0.0", "model.start_token_prob": "0.0",
                             "model.context_noise_max": "0.0", "optim.warmup_steps": "0", "optim.lr": "1e-3"})
    module = ReplayModule(cfg, load_motion_stats([str(ds)]), str(out))
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                         max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, gradient_clip_val=1.0, use_distributed_sampler=False)
    trainer.fit(module)
    return json.loads(out.read_text())


def test_ddp_two_processes_match_single_process(tmp_path: Path):
    write_random_dataset(tmp_path / "ds", clips=24, per_shard=4)
    single = _fit(tmp_path / "ds", tmp_path / "single.json", devices=1)
    ddp = _fit(tmp_path / "ds", tmp_path / "ddp.json", devices=2)
    assert len(single) == len(ddp) == 3
    for a, b in zip(single, ddp):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a)), (single, ddp)
    assert single[0] != single[2]  # the model did update between the compared steps
