"""`playmate config CONFIG [key=value ...] [--key KEY]`: the resolved config, as training would run it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="print the resolved experiment config (groups, overrides, derived values) without training",
        description="Load CONFIG with key=value overrides exactly as `playmate train` does (validation included) "
        "and print the result as YAML; with --key, print one value (e.g. --key run_dir, used by the sbatch "
        "scripts). What LightningCLI users know as --print_config.",
    )
    p.add_argument("config", help="experiment YAML, e.g. configs/stage1.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=3e-4 model=tiny")
    p.add_argument("--key", help="print only this dotted key's value (e.g. run_dir, trainer.max_steps)")
    p.set_defaults(func=run_config)


def run_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from configs.loader import load_experiment, to_yaml
    from pl_modules.commands import UserError

    cfg = load_experiment(args.config, args.overrides)
    if args.key is None:
        print(to_yaml(cfg), end="")
        return 0
    value = OmegaConf.select(OmegaConf.structured(cfg), args.key, default="\0missing")
    if value == "\0missing":
        raise UserError(f"--key {args.key}: no such key in the config (see `playmate config {args.config}`)")
    print(OmegaConf.to_yaml(value).strip() if OmegaConf.is_config(value) else value)
    return 0
