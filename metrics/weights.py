"""Strict, offline loading of feature-network weights from local files (never downloads).

Every error names the config key that points at the file, the file, and the offending state-dict key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from datamodules.shards import sha256_file  # noqa: F401  (re-exported: logged next to every number)

IGNORED_SUFFIXES = ("num_batches_tracked",)


def check_file(path: str | Path | None, config_key: str) -> Path:
    """Existing file or FileNotFoundError naming the config key."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{config_key}: no weights file configured (set {config_key} to a local file)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{config_key}: file {str(p)!r} not found (set {config_key} to a local weights file)")
    return p


def read_state_dict(
    path: str | Path | None, config_key: str, unwrap: Iterable[str] = ("state_dict",), strip_prefixes: Iterable[str] = ("module.",)
) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True) a tensor dict; unwrap known wrapper keys and DataParallel prefixes."""
    p = check_file(path, config_key)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled modules, corrupt files
        raise RuntimeError(
            f"{config_key}: cannot load {str(p)!r} with torch.load(weights_only=True) ({type(e).__name__}: {e}); "
            "convert it once to a plain state dict of tensors"
        ) from e
    for key in unwrap:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RuntimeError(f"{config_key}: {str(p)!r} does not contain a dict of tensors")
    for pre in strip_prefixes:
        if obj and all(k.startswith(pre) for k in obj):
            obj = {k[len(pre) :]: v for k, v in obj.items()}
    return obj


def load_strict(
    net: nn.Module,
    path: str | Path | None,
    config_key: str,
    ignore_missing: Callable[[str], bool] | None = None,
    **read_kwargs: object,
) -> nn.Module:
    """Load a local state dict into `net`: every key must match by name and shape.

    Only `num_batches_tracked` buffers (absent from legacy files) may be missing, plus keys for which
    `ignore_missing(key)` is True. Returns `net` in eval mode.
    """
    sd = read_state_dict(path, config_key, **read_kwargs)
    own = net.state_dict()
    ignore = ignore_missing or (lambda k: False)
    missing = [k for k in own if k not in sd and not k.endswith(IGNORED_SUFFIXES) and not ignore(k)]
    unexpected = [k for k in sd if k not in own]
    where = f"{config_key}: {str(path)!r}"
    if missing:
        raise KeyError(f"{where} lacks {len(missing)} key(s) of {type(net).__name__}, first: {missing[:5]}")
    if unexpected:
        raise KeyError(f"{where} has {len(unexpected)} unexpected key(s), first: {unexpected[:5]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{where}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    net.load_state_dict(sd, strict=False)
    return net.eval()


def weights_info(path: str | Path | None, config_key: str) -> dict[str, str]:
    """{config_key, path, sha256} for a report, or a 'random weights' marker when path is None."""
    if path is None:
        return {"config_key": config_key, "path": "", "sha256": "", "note": "RANDOM WEIGHTS (not a real metric)"}
    p = check_file(path, config_key)
    return {"config_key": config_key, "path": str(p), "sha256": sha256_file(p)}
