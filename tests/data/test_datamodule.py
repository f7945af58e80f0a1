"""The WebDataset window pipeline: shapes, normalisation, bad samples, determinism, DDP splitting."""

from __future__ import annotations

import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from configs.schema import DataConfig
from datamodules.contract import decode_sample
from datamodules.health import BadDataError
from datamodules.motion_wds import MotionDataModule, load_motion_stats
from datamodules.shards import iter_tar_samples
from models.motion import normalize_motion
from tests.helpers import write_random_dataset


def _cfg(ds: Path, **kw) -> DataConfig:
    base = DataConfig(train_shards=[str(ds)], val_shards=[str(ds)], batch_size=4, num_workers=0,
                      shuffle_buffer=8, epoch_windows=40, val_batch_size=3)
    return replace(base, **kw)


def _dm(cfg: DataConfig, seed: int = 0) -> MotionDataModule:
    dm = MotionDataModule(cfg, t_window=100, tp=25, seed=seed)
    dm.setup()
    return dm


def test_batch_contract_and_normalisation(random_dataset: Path):
    dm = _dm(_cfg(random_dataset))
    batches = list(dm.train_dataloader())
    assert len(batches) == 10  # epoch_windows / batch_size, one worker
    b = batches[0]
    assert b["motion"].shape == (4, 125, 70) and b["audio"].shape == (4, 125 * 640)
    assert b["kp"].shape == (4, 21, 3) and b["ref_motion"].shape == (4, 70) and b["pose_mean"].shape == (4, 7)
    assert b["emotion"].tolist() == [8, 8, 8, 8]  # null label: the random dataset has no emotions
    # context frames before the clip start are zero-padded; real frames are normalised
    real = b["motion"][b["has_context"]]
    if len(real):
        assert real.abs().sum(-1).min() > 0
    stats = json.loads((random_dataset / "stats.json").read_text())
    exp = torch.cat([x["motion"][:, 25:, :63].reshape(-1, 63) for x in batches])
    assert abs(exp.mean().item()) < 0.2 and 0.7 < exp.std().item() < 1.3  # z-scored by the global stats
    assert len(stats["exp_mean"]) == 63


def test_validation_is_deterministic_bit_for_bit(random_dataset: Path):
    a = list(_dm(_cfg(random_dataset)).val_dataloader())
    b = list(_dm(_cfg(random_dataset)).val_dataloader())
    assert len(a) == len(b) == 3  # 8 clips, batches of 3
    for x, y in zip(a, b):
        assert x["key"] == y["key"]
        for k in ("motion", "audio", "wav", "kp", "ref_motion"):
            assert torch.equal(x[k], y[k])


def _clips_in_shard_order(ds: Path) -> list[dict]:
    return [decode_sample(raw) for tar in sorted(ds.glob("*.tar")) for raw in iter_tar_samples(tar)]


def test_validation_windows_start_at_frame_zero_with_raw_fields(random_dataset: Path):
    dm = _dm(_cfg(random_dataset, val_max_clips=5))
    batches = list(dm.val_dataloader())
    assert [len(b["key"]) for b in batches] == [3, 2]  # the first 5 of 8 clips, batches of 3
    clips = _clips_in_shard_order(random_dataset)[:5]
    assert [k for b in batches for k in b["key"]] == [c["__key__"] for c in clips]
    stats = load_motion_stats([str(random_dataset)])
    i = 0
    for b in batches:
        n = len(b["key"])
        assert b["wav"].dtype == torch.int16 and b["wav"].shape == (n, 100 * 640)
        assert b["gt_motion"].dtype == torch.float32 and b["gt_motion"].shape == (n, 100, 70)
        assert b["ref_raw"].dtype == torch.float32 and b["ref_raw"].shape == (n, 70)
        assert b["motion"].shape == (n, 125, 70) and b["audio"].shape == (n, 125 * 640)
        assert b["start"].tolist() == [0] * n and b["has_context"].tolist() == [False] * n
        assert "data_stats" not in b
        for j, c in enumerate(clips[i : i + n]):
            assert torch.equal(b["wav"][j], torch.from_numpy(c["wav"][: 100 * 640]))
            assert torch.equal(b["gt_motion"][j], torch.from_numpy(c["motion"][:100]))
            assert torch.equal(b["ref_raw"][j], torch.from_numpy(c["motion"][0]))
            # Tp zero context rows (and zero audio), then the normalised frames [0, T) and their audio
            pose_mean = torch.tensor(c["meta"]["pose_mean"], dtype=torch.float32)
            expected = normalize_motion(torch.from_numpy(c["motion"][:100]), stats, pose_mean)
            assert torch.equal(b["motion"][j, :25], torch.zeros(25, 70))
            assert torch.equal(b["motion"][j, 25:], expected)
            assert torch.equal(b["audio"][j, : 25 * 640], torch.zeros(25 * 640))
            assert torch.equal(b["audio"][j, 25 * 640 :], torch.from_numpy(c["wav"][: 100 * 640]) / 32768.0)
        i += n


def test_validation_ranks_read_disjoint_shards(tmp_path: Path):
    write_random_dataset(tmp_path / "ds", clips=6, per_shard=2)  # 3 shards
    keys = []
    for rank, world in ((0, 2), (1, 2), (3, 4)):
        dm = _dm(_cfg(tmp_path / "ds"))
        dm.rank, dm.world = rank, world
        keys.append([k for b in dm.val_dataloader() for k in b["key"]])
    clips = [c["__key__"] for c in _clips_in_shard_order(tmp_path / "ds")]
    assert keys[0] == clips[0:2] + clips[4:6] and keys[1] == clips[2:4]  # shards 0, 2 and shard 1
    assert keys[2] == []  # rank 3 of 4 has no validation shard


def test_same_seed_same_training_stream_different_seed_differs(random_dataset: Path):
    k1 = [b["key"] for b in _dm(_cfg(random_dataset), seed=1).train_dataloader()]
    k2 = [b["key"] for b in _dm(_cfg(random_dataset), seed=1).train_dataloader()]
    k3 = [b["key"] for b in _dm(_cfg(random_dataset), seed=2).train_dataloader()]
    assert k1 == k2 and k1 != k3


def _corrupt_first_motion(shard: Path) -> str:
    key = next(iter_tar_samples(shard))["__key__"]
    with tarfile.open(shard) as tar:
        off = next(i.offset_data for i in tar if i.name == f"{key}.motion.npy")
    data = bytearray(shard.read_bytes())
    data[off + 300] ^= 0xFF
    shard.write_bytes(bytes(data))
    return key


def test_bad_samples_are_skipped_and_counted(tmp_path: Path, caplog):
    write_random_dataset(tmp_path / "ds", clips=12, per_shard=2)
    key = _corrupt_first_motion(tmp_path / "ds" / "rand-000001.tar")
    truncated = tmp_path / "ds" / "rand-000003.tar"
    truncated.write_bytes(truncated.read_bytes()[:20000])
    dm = _dm(_cfg(tmp_path / "ds", epoch_windows=200, max_bad_fraction=0.5))
    with caplog.at_level("WARNING"):
        batches = [dm.on_before_batch_transfer(b, 0) for b in dm.train_dataloader()]  # as the trainer does
    assert len(batches) == 50 and not any("data_stats" in b for b in batches)  # taken out before transfer
    seen_keys = {k for b in batches for k in b["key"]}
    assert key not in seen_keys
    assert dm.health.bad >= 2 and dm.health.seen > dm.health.bad
    worst = {url.rsplit("/", 1)[-1]: why for url, _, why in dm.health.worst_shards()}
    assert "sha256" in worst["rand-000001.tar"] and "unreadable tar" in worst["rand-000003.tar"]
    assert f"rand-000001.tar:{key}" in caplog.text and "sha256" in caplog.text
    assert "rand-000003.tar" in caplog.text


def test_too_many_bad_samples_stop_the_run_naming_shards(tmp_path: Path):
    write_random_dataset(tmp_path / "ds", clips=4, per_shard=1)
    for i in range(2):
        _corrupt_first_motion(tmp_path / "ds" / f"rand-00000{i}.tar")
    dm = _dm(_cfg(tmp_path / "ds", max_bad_fraction=0.1, min_bad_samples=3))
    with pytest.raises(BadDataError, match=r"data.max_bad_fraction.*rand-00000[01]\.tar"):
        for b in dm.train_dataloader():
            dm.on_before_batch_transfer(b, 0)


def test_too_few_shards_for_workers(random_dataset: Path):
    dm = MotionDataModule(_cfg(random_dataset, num_workers=8), t_window=100, tp=25)
    with pytest.raises(ValueError, match="4 shards < 8 workers"):
        dm.setup()


def test_missing_shards_name_the_config_key(tmp_path: Path):
    dm = MotionDataModule(_cfg(tmp_path / "nothing"), t_window=100, tp=25)
    with pytest.raises(FileNotFoundError, match="data.train_shards"):
        dm.setup()


# ---------------------------------------------------------------- two-process DDP (gloo, spawn)


import lightning.pytorch as pl  # noqa: E402


class KeyRecorder(pl.LightningModule):
    """Records the sample keys each rank trains on."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.keys: list[str] = []

    def training_step(self, batch, _):
        self.keys += batch["key"]
        return (self.w * batch["motion"].mean()).sum()

    def on_train_epoch_end(self):
        Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.keys))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_two_process_ddp_disjoint_keys_equal_batches(tmp_path: Path):
    write_random_dataset(tmp_path / "ds", clips=16, per_shard=2)
    cfg = _cfg(tmp_path / "ds", batch_size=4, num_workers=2, epoch_windows=48)
    dm = MotionDataModule(cfg, t_window=100, tp=25)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(KeyRecorder(str(tmp_path)), datamodule=dm)
    k0 = json.loads((tmp_path / "rank0.json").read_text())
    k1 = json.loads((tmp_path / "rank1.json").read_text())
    # 48 windows per epoch / global batch 4 = 12 batches per rank, 6 per worker, 2 windows each
    assert len(k0) == len(k1) == 24
    assert set(k0).isdisjoint(k1)
