"""`playmate demo`: the whole pipeline on the synthetic world, on CPU."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from pl_modules.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="run the main job on the synthetic world (CPU, about 7 minutes) and print where each output is",
        description="Synthesize a training set (emotion-labelled) and a held-out set, train stage one (tiny "
        "MotionDiT, log-mel audio), measure lip sync on held-out audio, train stage two (emotion controller "
        "on the frozen DiT), measure emotion control, generate motion for a held-out clip, and write an "
        "evaluation report. W&B runs are written offline. Re-running reuses the synthesized data and resumes "
        "the runs in OUT.",
    )
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--train-clips", type=int, default=d.train_clips, help=f"training clips (default {d.train_clips})")
    p.add_argument("--stage1-steps", type=int, default=d.stage1_steps, help=f"default {d.stage1_steps}")
    p.add_argument("--stage2-steps", type=int, default=d.stage2_steps, help=f"default {d.stage2_steps}")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pl_modules.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, train_clips=args.train_clips, stage1_steps=args.stage1_steps,
                        stage2_steps=args.stage2_steps, seed=args.seed))
    return 0
