"""Test helpers shared across test folders (import as `tests.helpers`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_random_dataset(out: Path, clips: int = 8, per_shard: int = 2, frames: int = 160, seed: int = 0,
                         emotions: bool = False, prefix: str = "rand") -> dict:
    """A small dataset of random (but contract-valid) clips: fast, no video."""
    from datamodules.contract import EMOTIONS, ClipSample, clip_meta, make_key
    from datamodules.shards import DatasetWriter

    rng = np.random.default_rng(seed)
    with DatasetWriter(out, prefix, maxcount=per_shard, provenance={"made_by": "tests"}) as w:
        for i in range(clips):
            m = (rng.normal(size=(frames, 70)) * 0.1).astype(np.float32)
            m[:, 69] = 1.0
            cid = f"s{seed}c{i:04d}"
            meta = clip_meta(clip_id=cid, dataset=prefix, speaker_id=f"spk{i % 3}", motion=m, source="random",
                             emotion=EMOTIONS[i % 8] if emotions else None, intensity=1 if emotions else None)
            w.write(ClipSample(make_key(prefix, cid), m, rng.normal(size=(21, 3)).astype(np.float32),
                               rng.integers(-3000, 3000, frames * 640).astype(np.int16), meta))
    return {"dir": out}


def tiny_overrides(ds: Path | None = None, run_dir: Path | None = None, steps: int = 4, **extra: str) -> list[str]:
    """Overrides that shrink the real configs/stage1.yaml (or stage2.yaml) to a seconds-long CPU run.

    ds None: no data (configs for model-only tests); keys of `extra` override (dots allowed, e.g.
    **{"model.tp": "4"}), group names select files (model="S").
    """
    base = {
        "setup": "synthetic_cpu", "model": "tiny", "trainer": "cpu", "logger": "none", "name": "t",
        "run_dir": str(run_dir or (ds.parent / "run" if ds else "runs/t")),
        "data.train_shards": f"[{ds or 'unused'}]", "data.val_shards": f"[{ds}]" if ds else "[]",
        "data.batch_size": "4", "data.num_workers": "0", "data.epoch_windows": "16", "data.val_max_clips": "4",
        "data.val_batch_size": "4", "trainer.max_steps": str(steps), "trainer.ckpt_every_n_steps": "2",
        "trainer.val_every_n_steps": "4", "trainer.limit_val_batches": "1", "diffusion.sampling_steps": "4",
        "optim.warmup_steps": "2",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def tiny_config(ds: Path | None = None, config: str = "stage1.yaml", **extra: str):
    """The real experiment config composed with `tiny_overrides` (typed, resolved): the one way tests
    make a small config."""
    from configs.loader import load_experiment

    return load_experiment(ROOT / "configs" / config, tiny_overrides(ds, **extra))


def write_checkpoint(out: Path, cfg, stats, seed: int = 0, global_step: int = 0, std: float = 0.05,
                     state_dict: dict | None = None) -> Path:
    """A Lightning-format checkpoint of a MotionDiffusionModule, written the way training writes it, then
    exported with the production exporter; returns the export dir. Weights: `state_dict` (a trained
    MotionDiT's), else random and non-zero (the zero-initialised gates and heads perturbed by `std`)."""
    import torch

    from configs.loader import to_container
    from pl_modules.checkpoints import export
    from pl_modules.module import MotionDiffusionModule

    module = MotionDiffusionModule(cfg, stats)
    torch.manual_seed(seed)
    module.configure_model()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised gates and heads would make ε̂ ≡ 0
        for p in module.model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    if state_dict is not None:
        module.model.load_state_dict(state_dict, strict=True)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()},
                "hyper_parameters": {"config": to_container(cfg), "motion_stats": stats.to_dict()},
                "motion_stats": stats.to_dict(), "global_step": global_step, "callbacks": {}}, ckpt)
    return export(ckpt, out / "export")


def write_stage0_inputs(out: Path, train_clips: int = 2, val_clips: int = 1, seconds: float = 1.0) -> dict[str, Path]:
    """Stage-zero inputs for CPU tests: tiny random face-model weights (public layout), generated VGG19
    weights in torchvision's format at width 1/8, and synthetic clips with video (train seed 0, val seed 1)."""
    import torch

    from datamodules.synthetic import synthesize_dataset
    from models.liveportrait.testing import write_random_weights
    from models.vgg import vgg19_state_dict

    paths = {"face": out / "face", "vgg": out / "vgg19.pth", "train": out / "train", "val": out / "val"}
    write_random_weights(paths["face"], cfg="tiny")
    torch.save(vgg19_state_dict(width=0.125), paths["vgg"])
    synthesize_dataset(paths["train"], clips=train_clips, seed=0, min_seconds=seconds, max_seconds=seconds, maxcount=1)
    synthesize_dataset(paths["val"], clips=val_clips, seed=1, min_seconds=seconds, max_seconds=seconds, maxcount=1)
    return paths


def stage0_overrides(paths: dict[str, Path], run_dir: Path, steps: int = 2, **extra: str) -> list[str]:
    """`tiny_overrides` for configs/stage0.yaml: tiny face model at 128² crops, 1/8-width VGG, one pair per step."""
    base = {"stage0.face_model_dir": str(paths["face"]), "stage0.face_model_preset": "tiny",
            "stage0.vgg_weights": str(paths["vgg"]), "stage0.vgg_width": "0.125", "data.batch_size": "1",
            "data.val_shards": f"[{paths['val']}]", "data.val_batch_size": "1", "stage0.val_pairs_per_clip": "1",
            "trainer.val_every_n_steps": str(steps), "optim.lr": "1e-3", "optim.warmup_steps": "0",
            "optim.ema_decay": "0.0", "stage0.image_size": "128",
            "data.num_workers": "1"}  # one decode worker: train() then keeps 1 intra-op thread (2 cores)
    base.update(extra)
    return tiny_overrides(paths["train"], run_dir, steps=steps, **base)
