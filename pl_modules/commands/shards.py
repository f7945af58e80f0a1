"""`playmate shards check DIR`, `playmate shards precompute SRC DST`, `playmate shards reextract SRC DST` and
`playmate shards lips DIR`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="verify dataset directories, add precomputed audio features, re-extract motion, "
                                      "find the lip keypoints")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser(
        "check",
        help="verify hashes, counts and every sample of dataset directories",
        description="Verify manifest.json (shard sha256, sample counts), stats.json and every sample "
        "against the shard contract (docs/data-format.md). Prints every problem as SHARD:KEY: message; "
        "exit code 1 if any.",
    )
    c.add_argument("dirs", nargs="+", help="dataset directories (each with manifest.json)")
    c.add_argument("--no-video", action="store_true", help="skip decoding mp4 members (faster)")
    c.set_defaults(func=check)
    pre = actions.add_parser(
        "precompute",
        help="rewrite a dataset with audio-encoder features (audio.npy) per clip",
        description="Run the configured audio encoder over every clip of SRC and write a copy of the "
        "dataset with a float16 audio.npy member (T, L, C) to DST (train with data.audio_source=precomputed).",
    )
    pre.add_argument("src", help="source dataset directory")
    pre.add_argument("dst", help="output dataset directory (created)")
    pre.add_argument("--encoder", default="mel", choices=("mel", "wav2vec2"), help="audio encoder (default mel)")
    pre.add_argument("--wav2vec2-path", default=None, help="local transformers Wav2Vec2 directory (for wav2vec2)")
    pre.add_argument("--batch-size", type=int, default=8)
    pre.add_argument("--context-frames", type=int, default=125,
                     help="audio frames the encoder sees at once; must equal the training window "
                          "model.tp + model.t_window (default 25 + 100 = 125)")
    pre.add_argument("--context-overlap", type=int, default=50,
                     help="frames shared by neighbouring encoder windows; must equal training's 2 · model.tp "
                          "(default 50)")
    pre.set_defaults(func=precompute)
    rx = actions.add_parser(
        "reextract",
        help="rewrite a dataset's motion with a (fine-tuned) face model, from each clip's mp4",
        description="Run the motion extractor M of --face-model on every clip's mp4 frames and write a copy of "
        "SRC to DST with the new motion.npy, kp.npy, json pose_mean/pose_std and stats.json; everything else "
        "of each sample is kept (docs/stage-zero.md). Resumable: run the same command again after a kill; "
        "finished shards are not redone.",
    )
    rx.add_argument("src", help="source dataset directory (clips with mp4 members)")
    rx.add_argument("dst", help="output dataset directory (created; an unfinished one is resumed)")
    rx.add_argument("--face-model", required=True,
                    help="LivePortrait weights dir (base_models/), e.g. a stage-zero `playmate export`")
    rx.add_argument("--face-preset", default="full", choices=("full", "tiny"), help="tiny: test weights only")
    rx.add_argument("--batch-size", type=int, default=32, help="frames per motion-extractor call")
    rx.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    rx.set_defaults(func=reextract)
    lp = actions.add_parser(
        "lips",
        help="find which motion keypoints are the lips (the mouth-opening signal's eval.lip_keypoints)",
        description="Score every ordered keypoint pair (upper, lower) of the clips in DIR by the Pearson r of "
        "its vertical gap (expression only, head pose removed) with the audio RMS envelope, mean over clips; "
        "print the best pairs, the keypoints that move most with the audio, how the configured pair ranks, "
        "and the suggested eval.lip_keypoints / --lip-keypoints (docs/evaluation.md, 'Lip keypoints').",
    )
    lp.add_argument("dirs", nargs="+", help="prepared dataset directories (or shard globs)")
    lp.add_argument("--max-clips", type=int, default=200, help="clips read, in shard order (default 200; 0 = all)")
    lp.add_argument("--min-frames", type=int, default=25, help="shorter clips are left out (default 25 = 1 s)")
    lp.add_argument("--lip-keypoints", type=int, nargs=2, metavar=("UPPER", "LOWER"),
                    help="the pair to rank (default: eval.lip_keypoints' default, the synthetic world's 19 20)")
    lp.add_argument("--top", type=int, default=5, help="pairs and keypoints printed (default 5)")
    lp.set_defaults(func=lips)


def check(args: argparse.Namespace) -> int:
    from datamodules.shards import check_dataset

    from pathlib import Path

    from pl_modules.commands import UserError

    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        raise UserError(f"{', '.join(missing)}: no such dataset directory (give directories holding manifest.json)")
    bad = 0
    for d in args.dirs:
        problems, summary = check_dataset(d, check_video=not args.no_video)
        for p in problems:
            print(f"{d}/{p}")
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        print(f"{d}: {summary['shards']} shards, {summary['samples']} samples, "
              f"{summary['bad_samples']} bad samples: {status}")
        bad += len(problems)
    return 1 if bad else 0


def precompute(args: argparse.Namespace) -> int:
    from datamodules.features import precompute_audio_features
    from models.audio import AudioEncoderConfig

    from pl_modules.commands import UserError

    try:
        cfg = AudioEncoderConfig(name=args.encoder, wav2vec2_path=args.wav2vec2_path,
                                 context_frames=args.context_frames, context_overlap=args.context_overlap)
    except ValueError as e:
        raise UserError(f"--context-overlap: {e}") from None
    if args.context_frames < 2:
        raise UserError(f"--context-frames must be ≥ 2, got {args.context_frames}")
    manifest = precompute_audio_features(args.src, args.dst, cfg, batch_size=args.batch_size)
    print(f"{args.dst}: {manifest['num_samples']} clips with audio.npy ({args.encoder})")
    return 0


def reextract(args: argparse.Namespace) -> int:
    from datamodules.prepare.motion import resolve_device
    from datamodules.reextract import reextract_motion
    from pl_modules.commands import UserError

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    try:
        manifest = reextract_motion(args.src, args.dst, args.face_model, args.face_preset, args.batch_size,
                                    resolve_device(args.device), progress=print)
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # ContractError, WeightsError: ValueErrors
        raise UserError(str(e)) from None
    print(f"{args.dst}: {manifest['num_samples']} clips in {len(manifest['shards'])} shards with motion from "
          f"{args.face_model}")
    return 0


def lips(args: argparse.Namespace) -> int:
    from pl_modules.commands import UserError

    if args.max_clips < 0 or args.min_frames < 2 or args.top < 1:
        raise UserError(f"need --max-clips ≥ 0, --min-frames ≥ 2, --top ≥ 1; got {args.max_clips}, "
                        f"{args.min_frames}, {args.top}")
    from configs.loader import ConfigError
    from pl_modules.evaluation.lips import check_lip_keypoints_on_data

    try:
        result = check_lip_keypoints_on_data(args.dirs, args.max_clips, args.min_frames, args.lip_keypoints)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    print("\n".join(result.lines(args.top)))
    return 0
