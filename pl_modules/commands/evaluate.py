"""`playmate evaluate CKPT [CKPT ...] --data SHARDS` → OUT/report.md, report.html, metrics.json.

Argument parsing and error mapping only; the work is `pl_modules.evaluation.offline`.
"""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    from configs.evaluation import FVD_SAMPLINGS, METRICS, PROTOCOLS, SYNC_CROPS, EvaluationConfig

    d = EvaluationConfig()  # every default below comes from here
    p = sub.add_parser(
        "evaluate",
        help="evaluate checkpoints on validation shards → report.md, report.html, metrics.json",
        description="Generate motion for the first --max-clips clips of --data with each checkpoint (fixed seeds), "
        "compute motion statistics and, with --face-model, render and compute FID/FVD/Sync-C/D/CSIM/PSNR/SSIM. "
        "Network metrics need local weights files (--feature-net, --i3d, --syncnet, --arcface) or --random-weights "
        "(pipeline check only: the report title then says RANDOM-WEIGHT FEATURE NETWORKS). "
        "--protocol hdtf sets what published HDTF tables use (512x512 frames, all clips and frames, every "
        "non-overlapping 16-frame FVD clip, Sync-C/D on S3FD face tracks); with real weights the results table "
        "then shows the published Playmate HDTF numbers and, per metric, 'yes' or each protocol detail that "
        "differs (flags given explicitly override the protocol's settings, and the report names the difference).",
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
    p.add_argument("--protocol", default=d.protocol, choices=tuple(PROTOCOLS),
                   help=f"named settings (default {d.protocol}: the flags' own defaults); hdtf: "
                        + ", ".join(f"{k}={v}" for k, v in PROTOCOLS["hdtf"].items()))
    p.add_argument("--max-clips", type=int, default=None,
                   help=f"clips evaluated, 0 = all (default {d.num_clips}; hdtf: all)")
    p.add_argument("--max-frames", type=int, default=None,
                   help=f"frames per clip, 0 = whole clip (default {d.max_frames}; hdtf: whole clips)")
    p.add_argument("--eval-size", type=int, default=None,
                   help=f"side of the compared frames: renders are 512, ground truth is resized to it "
                        f"(default {d.eval_size}; hdtf: 512)")
    p.add_argument("--fvd-clip-sampling", default=None, choices=FVD_SAMPLINGS,
                   help=f"FVD clips per video (default {d.fvd_clip_sampling}; hdtf: all_non_overlapping)")
    p.add_argument("--lip-keypoints", type=int, nargs=2, metavar=("UPPER", "LOWER"), default=None,
                   help=f"keypoints of the mouth-opening signal (default {d.lip_keypoints[0]} {d.lip_keypoints[1]}, "
                        "the synthetic world's; `playmate shards lips DIR` finds them on real data)")
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
        given = {"num_clips": args.max_clips, "max_frames": args.max_frames, "eval_size": args.eval_size,
                 "fvd_clip_sampling": args.fvd_clip_sampling,
                 "lip_keypoints": None if args.lip_keypoints is None else list(args.lip_keypoints)}
        cfg = EvaluationConfig.for_protocol(
            args.protocol, sample_seed=args.seed, sampling_steps=args.steps,
            metrics=list(args.metrics), face_model_dir=args.face_model, face_model_preset=args.face_model_preset,
            fid_weights=args.feature_net, fvd_weights=args.i3d, syncnet_weights=args.syncnet,
            s3fd_weights=args.s3fd, sync_crop=args.sync_crop,
            arcface_weights=args.arcface, arcface_arch=args.arcface_arch, lpips_weights=args.lpips,
            random_weights=args.random_weights, **{k: v for k, v in given.items() if v is not None},
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
