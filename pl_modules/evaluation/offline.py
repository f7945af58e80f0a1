"""`playmate evaluate`: every checkpoint generates motion for the same held-out clips with the same
seeds; the metrics are written as one report (several checkpoints: a column each, plots vs step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from configs.schema import EvaluationConfig
from datamodules.clips import load_clips
from pl_modules.evaluation.evaluator import Evaluator
from pl_modules.evaluation.report import CheckpointResult, write_report
from pl_modules.inference.generator import MotionGenerator

log = logging.getLogger("playmate.evaluate")


def evaluate_checkpoints(
    ckpts: Sequence[str | Path],
    data: Sequence[str | Path],
    out_dir: str | Path,
    config: EvaluationConfig | None = None,
    device: str | None = None,
    use_ema: bool = True,
    evaluator: Evaluator | None = None,
) -> Path:
    """Evaluate every checkpoint on the clips of `data` and write the report; returns OUT/report.md.

    config: defaults to `EvaluationConfig()` (8 clips, motion-only unless face_model_dir is set,
    network metrics skipped unless weights are given or random_weights). evaluator: a prebuilt
    Evaluator (tests inject stand-in networks); else built from the config.
    """
    if not ckpts:
        raise ValueError("evaluate: give at least one checkpoint")
    cfg = config or EvaluationConfig()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = [str(d) for d in data]
    clips = load_clips(data, cfg.num_clips, cfg.max_frames)
    log.info("evaluating %d checkpoint(s) on %d clips (%s)%s", len(ckpts), len(clips), dev,
             f"; {len(clips.skipped)} skipped (listed in the report)" if clips.skipped else "")
    evaluator = evaluator or Evaluator(cfg, dev)
    results = []
    for ckpt in ckpts:
        gen = MotionGenerator.from_checkpoint(ckpt, dev, use_ema=use_ema)
        result = evaluator.run(gen, clips)
        step = gen.global_step
        log.info("%s (step %s): %s", ckpt, step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.scalars.items())))
        results.append(CheckpointResult(str(ckpt), step, result))
        del gen
    return write_report(results, out_dir, data, clips.skipped)
