"""`playmate prepare configs/prepare.yaml dataset=NAME input=DIR output=DIR [key=value ...]`."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Raw dataset -> validated contract shards (docs/data-preparation.md).

  playmate prepare configs/prepare.yaml dataset=mead input=/data/MEAD output=/data/shards/mead \\
      face_model_dir=/weights/liveportrait --num-workers 8

Datasets: avspeech, celebvtext, acappella, mead, mafw, hdtf, folder. Each run appends to a per-slice
ledger (output/slices/sNNN/ledger.jsonl) and resumes where a killed run stopped. In a SLURM array
the slice comes from SLURM_ARRAY_TASK_ID/COUNT (or slice= num_slices=); afterwards run the same
command with --merge (action=merge) to write manifest.json and stats.json over all slices.
Exit code 0: done (rejections are listed, not errors); 1: some items failed with an error
(rerun to retry them); 2: bad configuration or input layout.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="raw datasets -> validated shards (resumable, SLURM arrays)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML file, e.g. configs/prepare.yaml")
    p.add_argument("overrides", nargs="*",
                   help="key=value overrides (dataset=, input=, output=, filters.sync=true, ...)")
    p.add_argument("--num-workers", type=int, default=None, help="CPU worker processes (same as num_workers=N)")
    p.add_argument("--merge", action="store_true", help="merge finished slices (same as action=merge)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from configs.loader import ConfigError, load_config
    from datamodules.prepare import PrepareConfig, format_summary, merge_slices, run_prepare
    from datamodules.prepare.adapters import LayoutError
    from pl_modules.commands import UserError

    overrides = list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"num_workers={args.num_workers}")
    if args.merge:
        overrides.append("action=merge")
    try:
        cfg = load_config(PrepareConfig, args.config, overrides)
    except ConfigError as e:
        raise UserError(str(e)) from None
    try:
        if cfg.action == "merge":
            manifest = merge_slices(cfg.output)
            print(f"{cfg.output}: merged {len(manifest['shards'])} shards, {manifest['num_samples']} samples")
            return 0
        summary = run_prepare(cfg)
    except (LayoutError, ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    print(format_summary(summary))
    failed = summary["items"]["failed"]
    if failed:
        print(f"{failed} item(s) failed with an error (see the FAILED lines / summary.json); rerun to retry them")
        return 1
    return 0
