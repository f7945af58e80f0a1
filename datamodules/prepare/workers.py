"""The CPU worker processes of data preparation and the hand-off of their clips.

CPU steps (decode, resample, split, crop: `segment.prepare_item`) run in `num_workers` spawned
processes (or inline with 0). Their clips come back in item order through .npy files in a scratch
folder (never pickled arrays), so the output does not depend on the number of workers; an item
without a result after `item_timeout_s` fails and the run goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.prepare.adapters import RawItem
from datamodules.prepare.config import PrepareConfig
from datamodules.prepare.face import make_detector
from datamodules.prepare.rejections import Rejected
from datamodules.prepare.segment import ClipRejection, PreparedClip, prepare_item

_W: dict[str, Any] = {}


def _init_worker(cfg: PrepareConfig, scratch: str, detector: Any = None) -> None:
    import torch

    torch.set_num_threads(1)
    _W.update(cfg=cfg, scratch=Path(scratch), detector=detector if detector is not None else make_detector(cfg))


def _worker_item(item: RawItem) -> tuple[str, list[dict], str, str]:
    """Run the CPU steps of one item; arrays go to .npy files. Returns (status, clips, reason, detail)."""
    clips: list[dict] = []
    try:
        for r in prepare_item(item, _W["cfg"], _W["detector"]):
            clips.append(_to_files(r, _W["scratch"]))
    except Rejected as e:
        return "rejected", clips, e.reason, e.detail
    except Exception as e:  # a bug or an unexpected input: the item fails, the run goes on
        return "failed", clips, type(e).__name__, error_text(e)
    return "ok", clips, "", ""


def _to_files(r: PreparedClip | ClipRejection, scratch: Path) -> dict:
    if isinstance(r, ClipRejection):
        return {"rejection": asdict(r)}
    d = {f.name: getattr(r, f.name) for f in fields(r) if f.name not in ("crops", "wav", "mp4")}
    for name in ("crops", "wav"):
        path = scratch / f"{r.clip_id}.{name}.npy"
        np.save(path, getattr(r, name), allow_pickle=False)
        d[name] = str(path)
    if r.mp4 is not None:
        (scratch / f"{r.clip_id}.mp4").write_bytes(r.mp4)
        d["mp4"] = str(scratch / f"{r.clip_id}.mp4")
    return {"clip": d}


def _from_files(d: dict) -> PreparedClip | ClipRejection:
    if "rejection" in d:
        return ClipRejection(**d["rejection"])
    c = dict(d["clip"])
    for name in ("crops", "wav"):
        path = Path(c[name])
        c[name] = np.load(path, allow_pickle=False)
        path.unlink()
    if c.get("mp4"):
        path = Path(c["mp4"])
        c["mp4"] = path.read_bytes()
        path.unlink()
    return PreparedClip(**c)


def error_text(e: BaseException) -> str:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return (f"{type(e).__name__}: {e} | " + "".join(tb[-3:]).replace("\n", " ").strip())[:2000]


class ItemFailed(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def item_outcomes(todo: list[RawItem], cfg: PrepareConfig, scratch: Path, detector: Any = None,
                  device: str = "cpu") -> Iterator[tuple[RawItem, Iterator]]:
    """(item, iterator of its clip results) in item order; the iterator raises Rejected / ItemFailed at its end.

    `detector` replaces the configured one (tests; it must pickle when num_workers > 0). The configured
    detector runs on `device` inline (num_workers 0) and on the CPU in worker processes.
    """
    if cfg.num_workers == 0:
        det = detector if detector is not None else make_detector(cfg, device)
        for it in todo:
            yield it, prepare_item(it, cfg, det)
        return

    def replay(out):
        status, clips, reason, detail = out
        for d in clips:
            yield _from_files(d)
        if status == "rejected":
            raise Rejected(reason, detail)
        if status == "failed":
            raise ItemFailed(detail)

    ctx = mp.get_context("spawn")  # no fork: decord/torch threads in the parent must not be inherited
    with ctx.Pool(cfg.num_workers, initializer=_init_worker, initargs=(cfg, str(scratch), detector)) as pool:
        queue: deque = deque()
        it_iter = iter(todo)
        for it in it_iter:
            queue.append((it, pool.apply_async(_worker_item, (it,))))
            if len(queue) >= 2 * cfg.num_workers:
                break
        while queue:
            it, res = queue.popleft()
            try:
                out = res.get(timeout=cfg.item_timeout_s)
            except mp.TimeoutError:  # a hung decoder (or a worker that died): fail the item, keep going
                out = ("failed", [], "", f"no result after item_timeout_s={cfg.item_timeout_s} s (worker hung or died)")
            nxt = next(it_iter, None)
            if nxt is not None:
                queue.append((nxt, pool.apply_async(_worker_item, (nxt,))))
            yield it, replay(out)
