"""`playmate train CONFIG [key=value ...]` and `playmate export CKPT OUT`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train stage zero, one or two from a config (resumes the run directory's latest checkpoint)",
        description="Load CONFIG (configs/stage0.yaml, stage1.yaml or stage2.yaml) with key=value overrides "
        "(a bare group=name picks configs/<group>/<name>.yaml, e.g. model=tiny trainer=cpu), validate it, "
        "and train. The run directory (run_dir, default runs/<name>) is stable: running the same command "
        "again resumes from its checkpoints/last.ckpt.",
    )
    p.add_argument("config", help="experiment YAML, e.g. configs/stage1.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=3e-4 data.batch_size=64")
    p.set_defaults(func=run_train)
    e = sub.add_parser(
        "export",
        help="checkpoint → plain fp32 state dict + config + normalisation stats (stage zero: LivePortrait files)",
        description="Convert a Lightning checkpoint file or a DeepSpeed checkpoint directory into OUT/model.pt "
        "(fp32 state dict of the MotionDiT, EMA weights unless --no-ema), OUT/config.yaml and OUT/stats.json. "
        "A stage-zero checkpoint becomes OUT/base_models/{appearance_feature_extractor,motion_extractor,"
        "warping_module,spade_generator}.pth, the public LivePortrait layout (a face_model_dir).",
    )
    e.add_argument("ckpt", help="a .ckpt file or a DeepSpeed .ckpt directory")
    e.add_argument("out", help="output directory")
    e.add_argument("--no-ema", action="store_true", help="export the trained weights instead of the EMA")
    e.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    from pl_modules.train import main

    main(args.config, args.overrides)  # errors: one line and an exit code, by pl_modules.commands.main
    return 0


def run_export(args: argparse.Namespace) -> int:
    from configs.loader import ConfigError
    from pl_modules.commands import UserError
    from pl_modules.export import export_checkpoint

    try:
        out = export_checkpoint(args.ckpt, args.out, use_ema=not args.no_ema)
    except ConfigError as e:
        raise UserError(str(e)) from None
    files = sorted(f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file())
    print(f"exported {args.ckpt} → {out}: {', '.join(files)}")
    return 0
