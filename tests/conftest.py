"""Shared fixtures: tiny contract datasets written in tmp dirs, clean global state per test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.helpers import write_random_dataset

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # also read by training (it then keeps the thread count)
torch.set_num_threads(1)  # 2 cores: intra-op threads on top of data workers/other processes are 4× slower


@pytest.fixture
def random_dataset(tmp_path: Path) -> Path:
    write_random_dataset(tmp_path / "ds")
    return tmp_path / "ds"


@pytest.fixture
def save_sd(tmp_path: Path) -> Callable[..., Path]:
    """Save a module's state dict (optionally edited) to a temp file and return its path."""

    def _save(net: torch.nn.Module, name: str = "w.pt", drop_nbt: bool = True, edit: Callable | None = None) -> Path:
        sd = {k: v for k, v in net.state_dict().items() if not (drop_nbt and k.endswith("num_batches_tracked"))}
        if edit is not None:
            sd = edit(sd)
        p = tmp_path / name
        torch.save(sd, p)
        return p

    return _save


@pytest.fixture(autouse=True)
def _clean_state():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)  # train() sets its own: the tests after it keep the suite's one thread
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords or "deepspeed" in item.keywords:
            item.add_marker(skip)
