"""`playmate evaluate CKPT [CKPT ...] --data SHARDS` → OUT/report.md, report.html, metrics.json.

Each checkpoint (Lightning .ckpt, DeepSpeed dir or export dir; EMA weights when saved) generates
motion for the same validation clips with the same seeds; the metrics of metrics/evaluation.py are
computed and written as one report (several checkpoints: a column each and plots vs global step).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("playmate.evaluate")


def evaluate_checkpoints(
    ckpts: Sequence[str | Path],
    data: Sequence[str | Path],
    out_dir: str | Path,
    config: Any = None,
    device: str | None = None,
    use_ema: bool = True,
    evaluator: Any = None,
) -> Path:
    """Evaluate every checkpoint on the clips of `data` and write the report; returns OUT/report.md.

    config: a metrics.evaluation.EvaluationConfig (defaults: 8 clips, motion-only unless
    face_model_dir is set, network metrics skipped unless weights are given or random_weights).
    evaluator: a prebuilt metrics.evaluation.Evaluator (tests: stand-in networks); else built from config.
    """
    import torch

    from metrics.evaluation import EvaluationConfig, Evaluator, MotionGenerator, load_clips
    from metrics.report import CheckpointResult, write_report
    from pl_modules.checkpoints import load_motion_model, read_checkpoint

    if not ckpts:
        raise ValueError("evaluate: give at least one checkpoint")
    cfg = config or EvaluationConfig()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = [str(d) for d in data]
    clips = load_clips(data, cfg.num_clips, cfg.max_frames)
    log.info("evaluating %d checkpoint(s) on %d clips (%s)", len(ckpts), len(clips), dev)
    evaluator = evaluator or Evaluator(cfg, dev)
    results = []
    for ckpt in ckpts:
        model, model_cfg, stats = load_motion_model(ckpt, use_ema=use_ema)
        step = read_checkpoint(ckpt).get("global_step")
        result = evaluator.run(MotionGenerator.from_config(model.to(dev), model_cfg, stats), clips)
        log.info("%s (step %s): %s", ckpt, step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.scalars.items())))
        results.append(CheckpointResult(str(ckpt), step, result))
        del model
    return write_report(results, out_dir, data)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate checkpoints on validation shards → report.md, report.html, metrics.json",
        description="Generate motion for the first --max-clips clips of --data with each checkpoint (fixed seeds), "
        "compute motion statistics and, with --face-model, render and compute FID/FVD/Sync-C/D/CSIM/PSNR/SSIM. "
        "Network metrics need local weights files (--feature-net, --i3d, --syncnet, --arcface) or --random-weights "
        "(pipeline check only: the report title then says RANDOM-WEIGHT FEATURE NETWORKS).",
    )
    p.add_argument("ckpts", nargs="+", help="checkpoints: .ckpt files, DeepSpeed dirs or export dirs")
    p.add_argument("--data", nargs="+", required=True, help="validation shards: dataset dirs, globs or brace URLs")
    p.add_argument("--out", default="eval_report", help="output directory (default: eval_report)")
    p.add_argument("--face-model", help="LivePortrait weights dir (with base_models/): enables rendering")
    p.add_argument("--face-model-preset", default="full", choices=("full", "tiny"), help="tiny: test/demo weights only")
    p.add_argument("--i3d", help="I3D weights for FVD (i3d_pretrained_400.pt)")
    p.add_argument("--syncnet", help="SyncNet weights for Sync-C/D (syncnet_v2.model)")
    p.add_argument("--feature-net", help="Inception weights for FID (torch-fidelity pt_inception file)")
    p.add_argument("--arcface", help="ArcFace IResNet weights for CSIM (backbone.pth)")
    p.add_argument("--arcface-arch", default="r100", choices=("r18", "r34", "r50", "r100"))
    p.add_argument("--lpips", help="AlexNet weights for LPIPS (alexnet-owt-7be5be79.pth; needs torchvision)")
    p.add_argument("--max-clips", type=int, default=8, help="clips evaluated (default 8)")
    p.add_argument("--max-frames", type=int, default=250, help="frames per clip (default 250 = 10 s; 0 = whole clip)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=1234, help="base sampling seed")
    p.add_argument("--metrics", nargs="+", help="subset of motion fid fvd sync csim psnr ssim lpips")
    p.add_argument("--random-weights", action="store_true",
                   help="use deterministic random-weight networks where no weights are given (numbers NOT comparable)")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights instead of the EMA")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from metrics.evaluation import METRICS, EvaluationConfig
    from pl_modules.cli import UserError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = EvaluationConfig(
            num_clips=args.max_clips, max_frames=args.max_frames, sample_seed=args.seed, sampling_steps=args.steps,
            metrics=list(args.metrics or METRICS), face_model_dir=args.face_model, face_model_preset=args.face_model_preset,
            fid_weights=args.feature_net, fvd_weights=args.i3d, syncnet_weights=args.syncnet,
            arcface_weights=args.arcface, arcface_arch=args.arcface_arch, lpips_weights=args.lpips,
            random_weights=args.random_weights,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        report = evaluate_checkpoints(args.ckpts, args.data, args.out, cfg, args.device, use_ema=not args.no_ema)
    except FileNotFoundError as e:  # a checkpoint, shard or weights file that is not there
        raise UserError(str(e)) from None
    print(f"report: {report}")
    print(f"        {report.with_name('report.html')}")
    print(f"        {report.with_name('metrics.json')}")
    return 0
