"""The one strict, offline reader and loader of pretrained weights files (never downloads, never unpickles).

Every network of the project with public weights loads through here: the LivePortrait modules,
SyncNet, S3FD, I3D, ArcFace, the FID Inception, VGG19 and wav2vec2 (whose transformers loader
reports its key mismatches to `check_keys`). Each file is read with
``torch.load(weights_only=True)``: plain tensor dicts load, pickled modules are refused.

Errors name the config key (or command-line flag) that points at the file, the file, and the
offending state-dict keys, so a wrong file or a wrong model size is one readable line.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

IGNORED_SUFFIXES = ("num_batches_tracked",)  # BatchNorm counters: absent from many legacy files


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, not a tensor dict, or keys/shapes that do not match."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (logged next to every number computed with its weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_file(path: str | Path | None, config_key: str) -> Path:
    """The existing file at `path`, or FileNotFoundError naming the config key and the fix."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{config_key}: no weights file configured (set {config_key} to a local file)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{config_key}: file {str(p)!r} not found (set {config_key} to a local weights file)")
    return p


def _strip_prefix(sd: OrderedDict[str, Tensor], prefix: str) -> OrderedDict[str, Tensor]:
    """Remove `prefix` from every key, keeping load metadata (version info of BatchNorm etc.) aligned."""
    meta = getattr(sd, "_metadata", None)
    out = OrderedDict((k[len(prefix) :], v) for k, v in sd.items())
    if meta is not None:
        base = prefix.rstrip(".")
        out._metadata = OrderedDict(  # type: ignore[attr-defined]
            ("" if k == base else k.removeprefix(prefix), v) for k, v in meta.items()
        )
    return out


def read_state_dict(
    path: str | Path | None,
    config_key: str,
    unwrap: Iterable[str] = ("state_dict",),
    strip_prefixes: Iterable[str] = ("module.",),
) -> OrderedDict[str, Tensor]:
    """torch.load(weights_only=True) a tensor dict; unwrap known wrapper keys and DataParallel prefixes."""
    p = check_file(path, config_key)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled modules, truncated or foreign files
        raise WeightsError(
            f"{config_key}: cannot load {str(p)!r} with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); give a plain state dict of tensors"
        ) from None
    for key in unwrap:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{config_key}: {str(p)!r} does not contain a dict of tensors (got {type(obj).__name__})")
    sd = obj if isinstance(obj, OrderedDict) else OrderedDict(obj)
    for pre in strip_prefixes:
        if sd and all(k.startswith(pre) for k in sd):
            sd = _strip_prefix(sd, pre)
    return sd


def check_keys(
    where: str,
    missing: list[str],
    unexpected: list[str],
    shapes: list[str] = (),  # type: ignore[assignment]
    hint: str = "",
) -> None:
    """Raise one WeightsError listing the first missing/unexpected/mismatched keys, if any."""
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), first {missing[:5]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[:5]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), first {list(shapes)[:3]}")
    raise WeightsError(f"{where}: weights do not match the model: {'; '.join(parts)}" + (f". {hint}" if hint else ""))


def check_state_dict(
    net: nn.Module,
    sd: Mapping[str, Tensor],
    where: str,
    ignore_missing: Callable[[str], bool] | None = None,
    hint: str = "",
) -> None:
    """Every key of `net` must be in `sd` with the same shape and vice versa (BatchNorm counters and
    keys with `ignore_missing(key)` may be missing)."""
    own = net.state_dict()
    ignore = ignore_missing or (lambda k: False)
    missing = [k for k in own if k not in sd and not k.endswith(IGNORED_SUFFIXES) and not ignore(k)]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    check_keys(where, missing, unexpected, shapes, hint)


def load_strict(
    net: nn.Module,
    source: str | Path | Mapping[str, Tensor] | None,
    config_key: str,
    ignore_missing: Callable[[str], bool] | None = None,
    hint: str = "",
    **read_kwargs: object,
) -> nn.Module:
    """Load a weights file (or an in-memory state dict) into `net`: every key must match by name and shape.

    Only BatchNorm `num_batches_tracked` counters and keys with `ignore_missing(key)` may be
    missing (they keep the module's values). Returns `net`.
    """
    if isinstance(source, Mapping):
        sd, where = source, config_key
    else:
        sd = read_state_dict(source, config_key, **read_kwargs)  # type: ignore[arg-type]
        where = f"{config_key}: {str(source)!r}"
    check_state_dict(net, sd, where, ignore_missing, hint)
    net.load_state_dict(sd, strict=False)  # exact match checked above; tolerated gaps keep their values
    return net


def weights_info(path: str | Path | None, config_key: str) -> dict[str, str]:
    """{config_key, path, sha256} for a report, or a 'random weights' marker when path is None."""
    if path is None:
        return {"config_key": config_key, "path": "", "sha256": "", "note": "RANDOM WEIGHTS (not a real metric)"}
    p = check_file(path, config_key)
    return {"config_key": config_key, "path": str(p), "sha256": sha256_file(p)}
