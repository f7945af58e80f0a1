"""A lean reader of WebDataset shards: tar members grouped into samples, only the members asked for.

It replaces webdataset's `tarfile_to_samples` in the training streams, where Python's `tarfile`
(a pax header parsed per member, every member's bytes copied, the video too) took about half of a
data worker's time. The grouping rule is webdataset's: a sample's key is the member name up to the
first dot of its basename, the rest (lower-cased) its member name; members of one sample are
contiguous. Members not asked for are skipped with a seek (their names are kept in `__skipped__`,
so the sha256 check still sees every member of the sample).

Format: POSIX ustar and pax (the `path` and `size` records), GNU long names; the header checksum
is checked. A damaged tar (bad checksum, cut short, a member twice in a sample) raises `TarError`;
the pipeline stage hands it to the handler once, drops the sample being read and goes on with the
next shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import IO, Any

import webdataset as wds

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # regular file, old-style regular file, contiguous file


class TarError(ValueError):
    """The bytes of a shard are not a readable tar; the message names the shard and the offset."""


def _number(field: bytes) -> int:
    """A tar header number: octal text, or base-256 when the first byte has its high bit set."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    """'LEN key=value\\n' records of a pax extended header."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= 0:
            raise ValueError(f"pax record length {length}")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class _Members:
    """(name, bytes or None for a skipped member) of each regular file of one tar stream, in order."""

    def __init__(self, stream: IO[bytes], where: str, wanted: Callable[[str], bool]) -> None:
        self.stream, self.where, self.wanted = stream, where, wanted
        try:
            self.size: int | None = os.fstat(stream.fileno()).st_size if stream.seekable() else None
        except (OSError, AttributeError, ValueError):
            self.size = None
        self.offset = 0

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise TarError(f"{self.where}: cut short at byte {self.offset + len(data)} (wanted {n} more bytes); "
                           "the shard is truncated")
        self.offset += n
        return data

    def _skip(self, n: int) -> None:
        if self.size is None:  # a pipe or a remote stream: read and drop
            while n > 0:
                n -= len(self._read(min(n, 1 << 20)))
            return
        if self.offset + n > self.size:
            raise TarError(f"{self.where}: cut short at byte {self.size} (a member ends at {self.offset + n}); "
                           "the shard is truncated")
        self.stream.seek(n, os.SEEK_CUR)
        self.offset += n

    def _header(self) -> bytes | None:
        block = self.stream.read(BLOCK)
        if not block or block == _ZERO_BLOCK:  # end of archive (a missing end marker is tolerated, as by tarfile)
            return None
        if len(block) != BLOCK:
            raise TarError(f"{self.where}: cut short in a header at byte {self.offset + len(block)}; the shard is "
                           "truncated")
        stored = _number(block[148:156])
        if stored != sum(block) - sum(block[148:156]) + 8 * 32:
            raise TarError(f"{self.where}: header checksum mismatch at byte {self.offset}; the shard is damaged")
        self.offset += BLOCK
        return block

    def __iter__(self) -> Iterator[tuple[str, bytes | None]]:
        long_name: str | None = None
        pax: dict[str, str] = {}
        while (block := self._header()) is not None:
            size, kind = _number(block[124:136]), block[156:157]
            padded = (size + BLOCK - 1) // BLOCK * BLOCK
            if kind == b"x":  # pax header of the next member
                pax = _pax_records(self._read(padded)[:size])
                continue
            if kind == b"L":  # GNU long name of the next member
                long_name = self._read(padded)[:size].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            name = pax.get("path") or long_name
            if name is None:
                name = block[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if block[257:262] == b"ustar" and block[345] != 0:
                    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    name = f"{prefix}/{name}"
            if "size" in pax:
                size = int(pax["size"])
                padded = (size + BLOCK - 1) // BLOCK * BLOCK
            long_name, pax = None, {}
            if kind not in _REGULAR or not self.wanted(name):
                self._skip(padded)
                if kind in _REGULAR:
                    yield name, None
                continue
            data = self._read(padded)
            yield name, data[:size] if padded != size else data


def _split(name: str) -> tuple[str, str] | None:
    """webdataset's key rule: (path up to the basename's first dot, the rest lower-cased); None when the
    basename has no dot or starts with one."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash:
        return None
    return name[:dot], name[dot + 1 :].lower()


def _is_meta(name: str) -> bool:
    """webdataset skips members named __…__ (e.g. a shard's __index__)."""
    base = name.split("/", 1)[0]
    return base.startswith("__") and base.endswith("__")


def read_samples(stream: IO[bytes], url: str, members: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
    """Samples {__key__, __url__, member: bytes, __skipped__: (member, …)} of one tar stream.

    `members`: the member names (as 'motion.npy', 'wav') to read; the others are skipped. None: all.
    """
    def wanted(name: str) -> bool:
        if members is None:
            return True
        parts = _split(name)
        return parts is not None and parts[1] in members

    current: dict[str, Any] | None = None
    for name, data in _Members(stream, url, wanted):
        parts = _split(name)
        if parts is None or _is_meta(name):
            continue
        key, ext = parts
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url, "__skipped__": ()}
        if ext in current or ext in current["__skipped__"]:
            raise TarError(f"{url}: member {ext!r} appears twice in sample {key!r}; the shard is damaged")
        if data is None:
            current["__skipped__"] += (ext,)
        else:
            current[ext] = data
    if current is not None:
        yield current


def _open(url: str) -> IO[bytes]:
    path = url[len("file:"):] if url.startswith("file:") else url
    if "://" not in url and not url.startswith("pipe:"):
        return open(path, "rb", buffering=1 << 16)
    return wds.gopen(url, "rb")


def tar_samples(sources: Iterable[dict[str, str]], handler: Callable[[Exception], bool],
                members: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
    """Pipeline stage: {"url"} → the samples of each shard. An unreadable shard goes to `handler` once
    (the sample it was reading is dropped); the stage goes on with the next shard while the handler
    returns True, and stops otherwise."""
    for source in sources:
        url = source["url"]
        try:
            with _open(url) as stream:
                yield from read_samples(stream, url, members)
        except (OSError, ValueError) as e:
            if not handler(e):
                return
