"""`playmate evaluate CKPT [CKPT ...] --data SHARDS` → OUT/report.md, report.html, metrics.json.

Argument parsing and error mapping only; the work is `pl_modules.evaluation.offline`.
"""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    from configs.evaluation import METRICS, SYNC_CROPS, EvaluationConfig

    d = EvaluationConfig()  # every default below comes from here
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
    p.add_argument("--face-model-preset", default=d.face_model_preset, choices=("full", "tiny"),
                   help="tiny: test/demo weights only")
    p.add_argument("--i3d", help="I3D weights for FVD (i3d_pretrained_400.pt)")
    p.add_argument("--syncnet", default=d.syncnet_weights, help="SyncNet weights for Sync-C/D (syncnet_v2.model)")
    p.add_argument("--s3fd", default=d.s3fd_weights,
                   help="S3FD weights (sfd_face.pth): with --syncnet, Sync-C/D on syncnet_python's face-track crops")
    p.add_argument("--sync-crop", default=d.sync_crop, choices=SYNC_CROPS,
                   help=f"Sync-C/D crop (default {d.sync_crop}: s3fd_track when --syncnet and --s3fd are given, "
                        "else the whole face crop)")
    p.add_argument("--feature-net", help="Inception weights for FID (pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--arcface", help="ArcFace IResNet weights for CSIM (backbone.pth)")
    p.add_argument("--arcface-arch", default=d.arcface_arch, choices=("r18", "r34", "r50", "r100"))
    p.add_argument("--lpips", help="AlexNet weights for LPIPS (alexnet-owt-7be5be79.pth; needs torchvision)")
    p.add_argument("--max-clips", type=int, default=d.num_clips, help=f"clips evaluated (default {d.num_clips})")
    p.add_argument("--max-frames", type=int, default=d.max_frames,
                   help=f"frames per clip (default {d.max_frames}; 0 = whole clip)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=d.sample_seed, help=f"base sampling seed (default {d.sample_seed})")
    p.add_argument("--metrics", nargs="+", default=list(METRICS), help=f"subset of {' '.join(METRICS)}")
    p.add_argument("--random-weights", action="store_true",
                   help="use deterministic random-weight networks where no weights are given (numbers NOT comparable)")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights instead of the EMA")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from configs.evaluation import EvaluationConfig
    from pl_modules.commands import UserError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = EvaluationConfig(
            num_clips=args.max_clips, max_frames=args.max_frames, sample_seed=args.seed, sampling_steps=args.steps,
            metrics=list(args.metrics), face_model_dir=args.face_model, face_model_preset=args.face_model_preset,
            fid_weights=args.feature_net, fvd_weights=args.i3d, syncnet_weights=args.syncnet,
            s3fd_weights=args.s3fd, sync_crop=args.sync_crop,
            arcface_weights=args.arcface, arcface_arch=args.arcface_arch, lpips_weights=args.lpips,
            random_weights=args.random_weights,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    from models.weights import WeightsError
    from pl_modules.evaluation.offline import evaluate_checkpoints
    from pl_modules.inference.inputs import GenerationError

    if args.device:
        from pl_modules.inference.request import check_device

        check_device(args.device)
    try:
        report = evaluate_checkpoints(args.ckpts, args.data, args.out, cfg, args.device, use_ema=not args.no_ema)
    except (FileNotFoundError, GenerationError, WeightsError) as e:  # a checkpoint, shard or weights file
        raise UserError(str(e)) from None
    import json

    metrics = report.with_name("metrics.json")
    skipped = json.loads(metrics.read_text()).get("skipped_clips", []) if metrics.is_file() else []
    for c in skipped:
        print(f"skipped {c['shard']}:{c['key']}: {c['reason']}")
    print(f"report: {report}" + (f" ({len(skipped)} sample(s)/shard(s) of --data skipped, listed there)"
                                 if skipped else ""))
    print(f"        {report.with_name('report.html')}")
    print(f"        {report.with_name('metrics.json')}")
    return 0
