"""W&B logging: offline without an API key, stable run id from the run directory, media, no secrets."""

from __future__ import annotations

from pathlib import Path


from tests.helpers import write_random_dataset
from tests.helpers import tiny_overrides
from tests.train.test_train import run


def test_offline_run_with_config_plot_and_resumed_id(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2-do-not-log")
    write_random_dataset(tmp_path / "ds", clips=4, per_shard=1)
    ov = tiny_overrides(tmp_path / "ds", tmp_path / "run", steps=2, logger="wandb",
                        **{"trainer.val_every_n_steps": "2"})
    t1 = run("stage1.yaml", ov)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "an offline run is written when no API key is configured"
    run_id = t1.logger.experiment.id
    media = list(runs[0].rglob("*.png"))
    assert media, "the validation mouth-opening plot was logged"
    t2 = run("stage1.yaml", [o if not o.startswith("trainer.max_steps") else "trainer.max_steps=3" for o in ov])
    assert t2.logger.experiment.id == run_id  # the resumed run continues the same W&B run
    logged = b"".join(p.read_bytes() for p in (tmp_path / "run" / "wandb").rglob("*") if p.is_file())
    assert b"hunter2-do-not-log" not in logged
