"""`playmate synth`: write a synthetic-world dataset of contract shards (docs/synthetic-world.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic dataset of contract shards",
        description="Write N clips of the procedural talking head (audio, motion, keypoints, video) through "
        "the shard writer. The same seed gives byte-identical shards; use two seeds for train and val.",
    )
    p.add_argument("--out", required=True, help="output dataset directory (created)")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="world seed (clip ids contain it; default 0)")
    p.add_argument("--emotions", action="store_true", help="label clips with the 8 emotions and add their patterns")
    p.add_argument("--singing", action="store_true", help="sustained sung notes with vibrato instead of speech")
    p.add_argument("--min-seconds", type=float, default=6.0, help="shortest clip (default 6)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="longest clip (default 10)")
    p.add_argument("--identities", type=int, default=None, help="number of speakers (default ceil(clips/4))")
    p.add_argument("--no-video", action="store_true", help="skip the mp4 member (faster, smaller)")
    p.add_argument("--per-shard", type=int, default=64, help="clips per shard (default 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from pl_modules.commands import UserError

    if args.clips < 1:
        raise UserError(f"--clips must be ≥ 1, got {args.clips}")
    if not 0 < args.min_seconds <= args.max_seconds:
        raise UserError(f"need 0 < --min-seconds ≤ --max-seconds, got {args.min_seconds} and {args.max_seconds}")
    if args.identities is not None and args.identities < 1:
        raise UserError(f"--identities must be ≥ 1, got {args.identities}")
    if args.per_shard < 1:
        raise UserError(f"--per-shard must be ≥ 1, got {args.per_shard}")
    from datamodules.synthetic import synthesize_dataset

    t0 = time.perf_counter()
    manifest = synthesize_dataset(
        args.out, args.clips, seed=args.seed, emotions=args.emotions, singing=args.singing,
        min_seconds=args.min_seconds, max_seconds=args.max_seconds, identities=args.identities,
        video=not args.no_video, maxcount=args.per_shard,
    )
    print(f"{args.out}: {manifest['num_samples']} clips in {len(manifest['shards'])} shard(s) "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
