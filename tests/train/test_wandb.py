"""W&B logging: offline without an API key, stable run id from the run directory, group/job_type,
config once, media, the export and the evaluation reports as artifacts, no secrets."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import tiny_overrides, write_random_dataset
from tests.train.test_train import run


def run_file(segment: Path, expect: bytes, wait_s: float = 60.0) -> bytes:
    """The bytes of an offline segment's run file once `expect` is in it (W&B's service process writes
    it after `finish()` returns) or the wait is over."""
    deadline = time.time() + wait_s
    while True:
        data = b"".join(p.read_bytes() for p in segment.rglob("*.wandb"))
        if expect in data or time.time() > deadline:
            return data
        time.sleep(0.2)


def test_offline_run_with_config_plot_and_resumed_id(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2-do-not-log")
    write_random_dataset(tmp_path / "ds", clips=4, per_shard=1)
    ov = tiny_overrides(tmp_path / "ds", tmp_path / "run", steps=2, logger="wandb",
                        **{"trainer.val_every_n_steps": "2", "eval.every_n_steps": "2", "eval.num_clips": "2",
                           "eval.metrics": "[motion]", "eval.max_frames": "30"})
    t1 = run("stage1.yaml", ov)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "an offline run is written when no API key is configured"
    run_id = t1.logger.experiment.id
    assert (t1.logger.experiment.group, t1.logger.experiment.job_type) == ("t", "stage1")
    segment = run_file(runs[0], b"t-export")
    assert b"t-export" in segment and b"t-eval" in segment  # the artifacts of the export and the evaluation
    assert (tmp_path / "run" / "eval" / "step00000002" / "report.md").is_file()
    media = list(runs[0].rglob("*.png"))
    assert media, "the validation mouth-opening plot was logged"
    t2 = run("stage1.yaml", [o if not o.startswith("trainer.max_steps") else "trainer.max_steps=3" for o in ov])
    assert t2.logger.experiment.id == run_id  # the resumed run continues the same W&B run
    segments = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(segments) == 2  # one per segment, all of one run id: `wandb sync run_dir/wandb/offline-run-*`
    second = run_file(segments[-1], b"t-export")
    assert b"optim" in segment and b"warmup_steps" not in second  # the config is logged by the first only
    logged = b"".join(p.read_bytes() for p in (tmp_path / "run" / "wandb").rglob("*") if p.is_file())
    assert b"hunter2-do-not-log" not in logged
