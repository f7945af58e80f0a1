"""Run identity: a run directory holds one experiment. Its resolved config is stored at the first start
(`config.yaml`); resuming with a changed key is refused with one line naming every changed key and
how to proceed — train under a new `name`, or list the keys allowed to change in `allow_changes`.

Operational keys that do not change what is learnt may always change on resume (where the run lives,
the length of the run, logging and checkpoint cadence, data-loader workers, validation size, the
logger, evaluation).
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

import yaml

from configs.loader import ConfigError, to_container, to_yaml
from configs.schema import ExperimentConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
ALWAYS_ALLOWED = (
    "run_dir", "trainer.max_steps", "trainer.val_every_n_steps", "trainer.log_every_n_steps",
    "trainer.ckpt_every_n_steps", "trainer.keep_last_checkpoints", "trainer.limit_val_batches", "data.num_workers",
    "data.loader_timeout_s", "data.val_max_clips", "data.val_batch_size", "logger.*", "eval.*", "allow_changes",
)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1} (lists are leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def changed_keys(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """key → (stored, current) for every key whose value differs (or exists on one side only)."""
    a, b = flatten(stored), flatten(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_and_store(run_dir: Path, cfg: ExperimentConfig, resuming: bool) -> None:
    """Compare with the stored config when resuming (ConfigError listing the refused changes), then
    store the config the run goes on with. A run dir without checkpoints simply takes the new one."""
    path = run_dir / CONFIG_FILE
    current = to_container(cfg)
    if resuming and path.is_file():
        try:
            stored = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: unreadable ({e}); restore it or train under a new name") from None
        changes = changed_keys(stored, current)
        allowed = (*ALWAYS_ALLOWED, *cfg.allow_changes)
        refused = {k: v for k, v in changes.items() if not any(fnmatch.fnmatch(k, pat) for pat in allowed)}
        if refused:
            listed = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in refused.items())
            raise ConfigError(
                f"{run_dir} holds a run of another config ({listed}); to start a new experiment set a new "
                f"name=… (run_dir follows it), or to continue this run with the change add "
                f"allow_changes=[{','.join(refused)}]"
            )
        for k, (old, new) in changes.items():
            log.info("config change on resume: %s %r → %r", k, old, new)
    path.write_text(to_yaml(cfg))
