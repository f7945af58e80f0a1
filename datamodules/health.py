"""Bad data, counted exactly and judged over the whole run.

Each DataLoader worker keeps a `SampleLedger`: samples read, samples skipped (with the shard and
the reason), unreadable tars (attributed to the shard being read, not to a name guessed from an
exception), and a guard that ends a worker whose shards yield nothing instead of letting it spin.
Every batch carries a snapshot of its worker's ledger (a plain dict: nothing to move to a device,
no host synchronisation). In the main process `DataHealth` keeps the latest snapshot of every
(epoch, worker) and judges the budget over the whole run on this rank: once `min_bad` samples are
bad and more than `max_fraction` of all samples read, training stops with one message naming the
worst shards and why they are bad.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)


class BadDataError(RuntimeError):
    """Too much bad data, or data that yields nothing: one message naming the shards and the fix."""


BAD_STREAK_LIMIT = 1000  # consecutive bad samples after which a worker stops: its stream yields nothing usable


class SampleLedger:
    """One worker's counts; `snapshot()` travels with each batch."""

    def __init__(self, worker: int, epoch: int, urls: list[str]) -> None:
        self.worker, self.epoch, self.urls = worker, epoch, urls
        self.seen = 0  # samples read (decoded or not)
        self.bad = 0  # samples skipped
        self.read_errors = 0  # unreadable tars (truncated, bad header)
        self.bad_shards: Counter[str] = Counter()
        self.reasons: dict[str, str] = {}  # shard → first reason seen there
        self.current_url = "?"  # the shard being read (set by the shard stage)
        self._draws_without_sample = 0
        self._bad_streak = 0

    # called by the pipeline stages -------------------------------------------------------------

    def shard_drawn(self, url: str) -> None:
        """A new shard is about to be read; a worker that keeps drawing shards without getting a
        single sample out of them has nothing to train on."""
        self.current_url = url
        self._draws_without_sample += 1
        limit = max(10, 2 * len(self.urls))
        if self._draws_without_sample > limit:
            shown = ", ".join(self.urls[:5]) + (" …" if len(self.urls) > 5 else "")
            raise BadDataError(
                f"data worker {self.worker}: its {len(self.urls)} shard(s) ({shown}) yielded no sample in "
                f"{limit} reads (empty or unreadable tars); run `playmate shards check` on their dataset and "
                "rewrite or remove them"
            )

    def sample_arrived(self) -> None:
        """A raw sample came out of a tar (before the shuffle buffer): the shards are not empty."""
        self._draws_without_sample = 0

    def sample_read(self) -> None:
        """A sample reached decoding (samples still in the shuffle buffer are not counted yet)."""
        self.seen += 1

    def sample_ok(self) -> None:
        """A sample passed every check (and will be trained on)."""
        self._bad_streak = 0

    def record_bad(self, url: str, key: str, reason: str) -> None:
        self.bad += 1
        self._bad_streak += 1
        self.bad_shards[url] += 1
        self.reasons.setdefault(url, reason)
        if self._bad_streak >= BAD_STREAK_LIMIT:  # no batch would ever carry these counts to the budget
            worst = "; ".join(f"{u} ({k} bad: {self.reasons.get(u, '?')})" for u, k in self.bad_shards.most_common(3))
            raise BadDataError(
                f"data worker {self.worker}: the last {self._bad_streak} samples it read were all bad; worst "
                f"shards: {worst}. Run `playmate shards check` on their dataset and rewrite or remove them"
            )
        if self.bad <= 20 or self.bad % 100 == 0:
            log.warning("skipping bad sample %s:%s (%s) [%d bad of %d read by worker %d]", url, key, reason,
                        self.bad, self.seen, self.worker)

    def tar_error(self, exn: Exception) -> bool:
        """webdataset handler: an unreadable tar counts once, against the shard being read."""
        self.read_errors += 1
        self.bad_shards[self.current_url] += 1
        self.reasons.setdefault(self.current_url, f"unreadable tar ({type(exn).__name__}: {exn})")
        log.warning("unreadable shard %s (%s: %s)", self.current_url, type(exn).__name__, exn)
        return True

    def snapshot(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "worker": self.worker, "seen": self.seen, "bad": self.bad,
                "read_errors": self.read_errors, "bad_shards": dict(self.bad_shards), "reasons": dict(self.reasons)}


class DataHealth:
    """Main-process view of every worker's ledger over the whole run; raises BadDataError past the budget."""

    def __init__(self, max_fraction: float, min_bad: int, rank: int = 0) -> None:
        self.max_fraction, self.min_bad, self.rank = max_fraction, min_bad, rank
        self._latest: dict[tuple[int, int], dict[str, Any]] = {}  # (epoch, worker) → cumulative snapshot

    def update(self, snapshot: dict[str, Any]) -> None:
        self._latest[(snapshot["epoch"], snapshot["worker"])] = snapshot
        self.check()

    @property
    def seen(self) -> int:
        return sum(s["seen"] for s in self._latest.values())

    @property
    def bad(self) -> int:
        """Skipped samples plus unreadable tars."""
        return sum(s["bad"] + s["read_errors"] for s in self._latest.values())

    def worst_shards(self, n: int = 5) -> list[tuple[str, int, str]]:
        counts: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        for s in self._latest.values():
            counts.update(s["bad_shards"])
            for url, why in s["reasons"].items():
                reasons.setdefault(url, why)
        return [(url, k, reasons.get(url, "?")) for url, k in counts.most_common(n)]

    def check(self) -> None:
        bad, seen = self.bad, self.seen
        if bad >= self.min_bad and bad > self.max_fraction * max(seen, 1):
            worst = "; ".join(f"{url} ({k} bad: {why})" for url, k, why in self.worst_shards())
            raise BadDataError(
                f"rank {self.rank}: {bad} of {seen} samples read so far were bad (> data.max_bad_fraction="
                f"{self.max_fraction}); worst shards: {worst}. Run `playmate shards check` on their dataset and "
                "rewrite or remove them"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": [dict(s) for s in self._latest.values()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._latest = {(s["epoch"], s["worker"]): s for s in state.get("snapshots", [])}
