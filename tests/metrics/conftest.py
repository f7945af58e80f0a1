"""Fixtures for metric tests: seeded generators, temp weight files, a 2-process gloo runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.metrics.gloo import _free_port, _worker


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download weights fails loudly."""

    def _refuse(*a: object, **k: object) -> None:
        raise RuntimeError("network access attempted in a metrics test")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse)


@pytest.fixture
def run_gloo(tmp_path: Path) -> Callable[..., list]:
    """Run fn(rank, world, *args) on 2 gloo CPU processes; return the per-rank results."""

    def _run(fn: Callable, *args: object, world: int = 2) -> list:
        out = str(tmp_path / "res")
        mp.spawn(_worker, args=(world, _free_port(), fn, args, out), nprocs=world, join=True)
        return [torch.load(f"{out}.{r}", weights_only=True) for r in range(world)]

    return _run
