"""Evaluation metrics: Fréchet core, FID, FVD, Sync-C/D, CSIM, LPIPS/PSNR/SSIM, emotion, motion statistics.

Submodules are imported lazily by callers (`from metrics.sync import SyncNet`), so importing
`metrics` stays cheap and never loads a feature network. See docs/metrics.md.
"""

from metrics.frechet import FrechetDistance, frechet_distance

__all__ = ["FrechetDistance", "frechet_distance"]
