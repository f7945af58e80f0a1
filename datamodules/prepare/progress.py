"""The one-line progress display of a prepare run (items, clips kept, clips/s, ETA) on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """One status line: items, clips kept, clips/s and ETA (every `every` s; a line per update when not a tty)."""

    def __init__(self, total: int, label: str, enabled: bool = True, every: float = 2.0) -> None:
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.items = self.clips = 0
        self.t0 = self._last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, items: int = 0, clips: int = 0, force: bool = False) -> None:
        self.items += items
        self.clips += clips
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every):
            return
        self._last = now
        el = max(now - self.t0, 1e-9)
        rate = self.items / el
        eta_s = time.strftime("%H:%M:%S", time.gmtime((self.total - self.items) / rate)) if rate > 0 else "--:--:--"
        line = (f"{self.label} {self.items}/{self.total} items | {self.clips} clips | "
                f"{self.clips / el:.2f} clips/s | {60 * self.clips / el:.1f} clips/min | ETA {eta_s}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(force=True)
        if self.enabled and self.tty:
            print(file=sys.stderr)
