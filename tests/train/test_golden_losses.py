"""A cheap numeric regression anchor: the first training losses of the tiny preset on a fixed batch of
the synthetic world, compared with tests/assets/golden_losses_tiny.json.

Everything random is seeded (weights, diffusion noise and steps, dropout, condition drops, context
noise), so the numbers change only when the model, the loss, the normalisation, the optimiser or
the data pipeline changes. When a change is intended, regenerate the file with
`PLAYMATE_UPDATE_GOLDEN=1 pytest tests/train/test_golden_losses.py` and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tests.helpers import ROOT, tiny_config

from datamodules.contract import decode_sample
from datamodules.motion_wds import load_motion_stats
from datamodules.windows import WindowMaker, collate_windows
from datamodules.shards import iter_tar_samples
from datamodules.synthetic import synthesize_dataset
from pl_modules.module import MotionDiffusionModule

GOLDEN = ROOT / "tests" / "assets" / "golden_losses_tiny.json"
STEPS = 20
# Measured spread of these losses between 1 and 2 intra-op threads on one machine: 2.4e-7 relative.
RTOL = 1e-4


def golden_losses(tmp: Path) -> list[float]:
    synthesize_dataset(tmp / "ds", clips=4, seed=0, video=False, maxcount=4)
    cfg = tiny_config(tmp / "ds", **{"optim.lr": "1e-3"})
    stats = load_motion_stats([str(tmp / "ds")])
    maker = WindowMaker(stats, cfg.model.t_window, cfg.model.tp, "wav")
    clips = [decode_sample(raw) for tar in sorted((tmp / "ds").glob("*.tar")) for raw in iter_tar_samples(tar)]
    batch = collate_windows([maker.window(s, start) for s in clips for start in (0, cfg.model.tp)])  # 8 windows
    torch.manual_seed(0)
    module = MotionDiffusionModule(cfg, stats)
    module.configure_model()
    module.log = lambda *a, **k: None  # no trainer
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    module.train()
    losses = []
    for _ in range(STEPS):
        loss = module.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.trainable_parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_first_losses_of_the_tiny_preset_match_the_golden_file(tmp_path):
    losses = golden_losses(tmp_path)
    if os.environ.get("PLAYMATE_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({"steps": STEPS, "losses": losses}, indent=1) + "\n")
        pytest.skip(f"rewrote {GOLDEN}")
    want = json.loads(GOLDEN.read_text())["losses"]
    assert len(losses) == len(want) == STEPS
    assert losses == pytest.approx(want, rel=RTOL), "training numerics changed; see this file's docstring"
    assert losses[-1] < losses[0]  # it learns on this batch
