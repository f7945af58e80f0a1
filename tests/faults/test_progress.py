"""Progress a log file shows: plain lines with PLAYMATE_PROGRESS=0 (what the SLURM scripts set), and a
bar of optimiser steps out of max_steps that starts where a resumed run stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import tiny_overrides, write_random_dataset

import pl_modules.train as train_mod
from configs.loader import load_experiment
from pl_modules.progress import StepProgressBar, progress_bar_wanted

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("progress") / "ds"
    write_random_dataset(out, clips=8, per_shard=2)
    return out


def test_log_lines_without_a_bar(ds, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLAYMATE_PROGRESS", "0")
    train_mod.train(load_experiment(ROOT / "configs" / "stage1.yaml", tiny_overrides(
        ds, tmp_path / "run", steps=6, **{"trainer.log_every_n_steps": "2", "trainer.val_every_n_steps": "4"})))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train]")]
    assert [line.split(" (")[0] for line in lines] == ["[train] step 2/6", "[train] step 4/6", "[train] step 6/6"]
    assert all(" · loss " in line and " · lr " in line and "samples/s" in line and "ETA " in line for line in lines)
    assert "data bad 0/" in lines[-1] and "val/mse" in lines[-1] and "val/mse" not in lines[0]


def test_the_bar_counts_steps_of_max_steps_from_where_a_resumed_run_stopped(ds, tmp_path, monkeypatch):
    starts: list[tuple[int, int]] = []
    on_start = StepProgressBar.on_train_epoch_start

    def record(self, trainer, *a):
        on_start(self, trainer, *a)
        starts.append((self.train_progress_bar.n, self.train_progress_bar.total))

    monkeypatch.setattr(StepProgressBar, "on_train_epoch_start", record)
    monkeypatch.setattr(train_mod, "progress_bar_wanted", lambda env: True)
    cfg = lambda steps: load_experiment(ROOT / "configs" / "stage1.yaml",  # noqa: E731
                                        tiny_overrides(ds, tmp_path / "run", steps=steps))
    train_mod.train(cfg(4))
    trainer = train_mod.train(cfg(10))
    bar = next(c for c in trainer.callbacks if isinstance(c, StepProgressBar)).train_progress_bar
    assert (bar.n, bar.total) == (10, 10)
    assert starts[0] == (0, 4) and (4, 10) in starts  # the resumed run's bar starts at step 4 of 10


def test_the_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert progress_bar_wanted(None) and progress_bar_wanted("1") and not progress_bar_wanted("0")
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert not progress_bar_wanted(None)
