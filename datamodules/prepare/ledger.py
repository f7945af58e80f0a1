"""The per-slice ledger: an append-only, fsync'ed jsonl file that is the source of truth for resume.

Records (one json object per line, field ``type``):

    run      a process started: part index, slice, num_slices, settings that shape the output
    clip     a clip was written to a shard (status done, pending until that shard is closed)
             or rejected (status rejected, reason, detail)
    item     an item finished: done (with its written/rejected clip ids), rejected (reason) or
             failed (error); failed items are retried by the next run (retry_failed)
    shard    a shard was closed and fsync'ed: name, count, sha256, clip ids, keys, statistics
    complete every item of the slice is finished; manifest.json/stats.json/summary.json are written

A clip is done only once a `shard` record lists it: a process killed with a shard open leaves a
partial tar that no `shard` record names; the next run deletes it and redoes those clips, while
clips in closed shards are never written again. So a rerun neither duplicates nor loses a clip.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER = "ledger.jsonl"


class Ledger:
    """Append records durably (flush + fsync per record); a torn last line from a crash is cut off on open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self._f.write(json.dumps(record, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _cut_torn_tail(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line is ignored, a corrupt line elsewhere is an error naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):  # torn tail without newline
                break
            raise ValueError(f"{path}:{n}: corrupt ledger line; fix or delete that line and rerun") from None
    return out


@dataclass
class LedgerState:
    """What the ledger says has happened, reduced to the facts resume needs."""

    runs: list[dict] = field(default_factory=list)
    shards: dict[str, dict] = field(default_factory=dict)  # closed shards by name
    done_clips: dict[str, str] = field(default_factory=dict)  # clip id → shard name (closed shards only)
    rejected_clips: dict[str, dict] = field(default_factory=dict)  # clip id → record
    items: dict[str, dict] = field(default_factory=dict)  # item id → latest item record
    complete_after_last_run: bool = False

    @classmethod
    def load(cls, path: str | Path) -> LedgerState:
        st = cls()
        for r in read_records(path):
            t = r.get("type")
            if t == "run":
                st.runs.append(r)
                st.complete_after_last_run = False
            elif t == "shard":
                st.shards[r["name"]] = r
                for cid in r["clips"]:
                    st.done_clips[cid] = r["name"]
            elif t == "clip" and r.get("status") == "rejected":
                st.rejected_clips[r["clip"]] = r
            elif t == "item":
                st.items[r["item"]] = r
            elif t == "complete":
                st.complete_after_last_run = True
        for cid in st.done_clips:  # a clip redone after a crash and written later wins over an old rejection
            st.rejected_clips.pop(cid, None)
        return st

    @property
    def next_part(self) -> int:
        return 1 + max((int(r["part"]) for r in self.runs), default=-1)

    def item_finished(self, item_id: str, retry_failed: bool = True) -> bool:
        r = self.items.get(item_id)
        if r is None:
            return False
        if r["status"] == "failed":
            return not retry_failed
        if r["status"] == "rejected":
            return True
        return all(c in self.done_clips for c in r.get("written", []))

    def summary(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        """Kept / rejected-by-reason / failed counts over the final state of every item and clip."""
        ids = list(self.items) if item_ids is None else item_ids
        items = [self.items[i] for i in ids if i in self.items]
        rej_items = Counter(r["reason"] for r in items if r["status"] == "rejected")
        failed = [r for r in items if r["status"] == "failed"]
        idset = set(ids)
        rej_clips = Counter(r["reason"] for r in self.rejected_clips.values() if r["item"] in idset)
        return {
            "items": {
                "total": len(ids), "finished": len(items), "done": sum(r["status"] == "done" for r in items),
                "rejected": dict(sorted(rej_items.items())), "failed": len(failed),
            },
            "clips": {"kept": len(self.done_clips), "rejected": dict(sorted(rej_clips.items()))},
            "rejected_items": sorted(
                ({"item": r["item"], "reason": r["reason"], "detail": r.get("detail", ""), "video": r.get("video")}
                 for r in items if r["status"] == "rejected"), key=lambda d: d["item"]),
            "rejected_clips": sorted(
                ({"clip": r["clip"], "reason": r["reason"], "detail": r.get("detail", "")}
                 for r in self.rejected_clips.values() if r["item"] in idset), key=lambda d: d["clip"]),
            "failed_items": sorted(({"item": r["item"], "error": r.get("error", "")} for r in failed),
                                   key=lambda d: d["item"]),
        }
