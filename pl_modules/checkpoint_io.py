"""Checkpoints that cannot be lost: atomic writes, and resume from the newest checkpoint that loads.

A checkpoint file is written to a temporary file in its own directory, flushed and fsync'ed, then
renamed over the target (`os.replace`, atomic on one filesystem) and the directory is fsync'ed. A
job killed mid-save therefore leaves the previous checkpoint intact, whatever `TMPDIR` points at
(Lightning's default save goes through fsspec's temporary file, which lives in `TMPDIR` and is
*moved* — copied — into place when that is another filesystem, so a kill truncates the target).

A DeepSpeed checkpoint is a directory written by every rank. It is written under a fresh hidden
name, and a name that already exists (`last.ckpt`) becomes a symbolic link switched atomically to
the new directory (`publish_directory`).

On start, `find_resume_checkpoint` looks at every `*.ckpt` of the run's checkpoint directory,
verifies each (the zip archive's CRCs, the stored step), and returns the newest one that loads;
broken ones are named in the log line, and when checkpoints exist but none loads the run refuses
to start from scratch.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from configs.loader import ConfigError

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"  # hidden temporary files and directories: `.<name>.tmp-<pid>`


class ResumeError(ConfigError):
    """Checkpoints exist but none can be used: the run must not silently start from scratch."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over `path`, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO: atomic saves (`atomic_torch_save`), loads with weights_only=True."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)


def next_target(path: Path) -> Path:
    """A fresh hidden directory name beside `path` for the next save: `.<name>.<n>`."""
    used = [p.name.rsplit(".", 1)[1] for p in path.parent.glob(f".{path.name}.[0-9]*")]
    return path.parent / f".{path.name}.{1 + max((int(u) for u in used if u.isdigit()), default=0)}"


def publish(path: Path, target: Path) -> None:
    """Make `path` name the finished directory `target`, atomically (see `publish_directory`)."""
    parent = path.parent
    _fsync_dir(parent)
    if not path.exists() and not path.is_symlink():
        os.replace(target, path)
    else:
        previous = path.resolve() if path.is_symlink() else None
        if path.is_dir() and not path.is_symlink():  # a real directory from an earlier save: move it aside
            previous = parent / f"{target.name}.old"
            os.replace(path, previous)
        link = parent / f".{path.name}.link{TMP_MARK}{os.getpid()}"
        link.unlink(missing_ok=True)
        os.symlink(target.name, link)
        os.replace(link, path)
        if previous is not None and previous.exists() and previous != target.resolve():
            shutil.rmtree(previous, ignore_errors=True)
    _fsync_dir(parent)


def publish_directory(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write a checkpoint directory with `write(tmp_dir)`, then make `path` name it atomically.

    A new name is a plain rename of the finished directory. An existing name becomes a symbolic
    link to a hidden `.<name>.<n>` directory, switched with `os.replace` (atomic), and the previous
    target is removed afterwards. One process: multi-rank writers use `next_target` and `publish`
    around their own synchronisation (`deepspeed_strategy`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = next_target(path)
    write(target)
    publish(path, target)


def deepspeed_strategy(**kwargs: Any) -> Any:
    """Lightning's DeepSpeedStrategy whose checkpoint directories are published atomically: every rank
    writes its shards into a fresh hidden directory chosen by rank zero, then rank zero publishes it."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    class AtomicDeepSpeedStrategy(DeepSpeedStrategy):
        def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
            path = Path(filepath)
            target = self.broadcast(next_target(path) if self.is_global_zero else None)
            super().save_checkpoint(checkpoint, target, storage_options)
            self.barrier("checkpoint written")
            if self.is_global_zero:
                publish(path, target)
            self.barrier("checkpoint published")

    return AtomicDeepSpeedStrategy(**kwargs)


def clean_temporaries(ckpt_dir: Path) -> list[Path]:
    """Remove what a killed save left behind: temporary files, and hidden DeepSpeed directories that no
    published name links to. Returns what was removed."""
    ckpt_dir = Path(ckpt_dir)
    linked = {p.resolve() for p in ckpt_dir.iterdir() if p.is_symlink()} if ckpt_dir.is_dir() else set()
    orphans = [p for p in ckpt_dir.glob(".*.ckpt.[0-9]*") if p.is_dir() and not p.is_symlink()
               and p.resolve() not in linked]
    removed = []
    for p in [*ckpt_dir.glob(f".*{TMP_MARK}*"), *orphans]:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# ------------------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------------------


class CorruptCheckpoint(Exception):
    """A checkpoint that cannot be used (truncated, not an archive, no step)."""


def _verified_archive(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpoint(f"not a complete checkpoint archive ({path.stat().st_size} bytes)")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CorruptCheckpoint(f"unreadable archive ({e})") from None
    if bad is not None:
        raise CorruptCheckpoint(f"archive member {bad} fails its CRC check")


def checkpoint_step(path: str | Path) -> int:
    """The global step stored in a Lightning checkpoint file or DeepSpeed checkpoint directory,
    after verifying that every archive in it is complete; CorruptCheckpoint otherwise."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "checkpoint").glob("*.pt"))
        main = path / "checkpoint" / "mp_rank_00_model_states.pt"
        if not main.is_file():
            raise CorruptCheckpoint("DeepSpeed directory without checkpoint/mp_rank_00_model_states.pt")
        for f in files:
            _verified_archive(f)
        state = torch.load(main, map_location="cpu", weights_only=True, mmap=True)
    else:
        _verified_archive(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a complete archive that is not a checkpoint of ours
            raise CorruptCheckpoint(f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int):
        raise CorruptCheckpoint("no global_step in it (not a training checkpoint)")
    return step


@dataclass
class ResumePoint:
    path: Path
    step: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def describe(self) -> str:
        why = "; ".join(f"{p.name}: {reason}" for p, reason in self.skipped)
        return f"resuming from {self.path} at step {self.step}" + (f" (skipped {why})" if why else "")


def find_resume_checkpoint(ckpt_dir: str | Path) -> ResumePoint | None:
    """The newest verified checkpoint of `ckpt_dir` (highest step; last.ckpt on a tie), or None when
    there is none. ResumeError when checkpoints exist but none can be loaded."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    found = sorted(p for p in ckpt_dir.iterdir() if p.name.endswith(".ckpt") and not p.name.startswith("."))
    valid, skipped = [], []
    for p in found:
        try:
            valid.append((checkpoint_step(p), p.name == "last.ckpt", p))
        except (CorruptCheckpoint, OSError) as e:
            skipped.append((p, str(e)))
    if not found:
        return None
    if not valid:
        names = "; ".join(f"{p.name}: {reason}" for p, reason in skipped)
        raise ResumeError(
            f"{ckpt_dir}: checkpoints exist but none can be loaded ({names}); move them away to start this "
            "run from scratch, or train under a new name"
        )
    step, _, path = max(valid)
    return ResumePoint(path, step, skipped)
