"""Data preparation: raw datasets → validated contract shards (docs/data-preparation.md).

    from datamodules.prepare import PrepareConfig, run_prepare, merge_slices
    summary = run_prepare(cfg)                 # one slice (SLURM array task), resumable
    manifest = merge_slices(cfg.output)        # manifest.json + stats.json over all slices
"""

from datamodules.prepare.config import PrepareConfig, resolve_slice
from datamodules.prepare.pipeline import run_prepare
from datamodules.prepare.slices import format_summary, merge_slices, slice_of

__all__ = ["PrepareConfig", "format_summary", "merge_slices", "resolve_slice", "run_prepare", "slice_of"]
