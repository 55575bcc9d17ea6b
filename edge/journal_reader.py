"""Reading the event journal's segment files: the segment list, the torn-tail repair at open, and
:class:`JournalReader`, with which durable sinks read committed records. The writing side, and the layout,
are in :mod:`edge.journal`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.journal import Journal

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^events-(\d{12})\.jsonl$")


def list_segments(folder: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of the journal's segments in ``folder``, oldest first."""
    out = []
    for p in folder.iterdir():
        m = _SEGMENT.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def recover(folder: Path) -> tuple[int, int]:
    """Cut a torn or garbled tail off the newest segment: (the last good seq, 0 for a new journal; bytes cut)."""
    segs, cut = list_segments(folder), 0
    while segs:
        first, path = segs[-1]
        data = path.read_bytes()
        good, last = last_good(data)
        if good < len(data):
            logger.warning("journal %s: cut %d byte(s) of a torn or garbled last line (power cut?)", path,
                           len(data) - good)
            cut += len(data) - good
            with open(path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        if last is not None:
            return last, cut
        if good == 0 and len(segs) > 1:  # an empty newest segment: the seq is in the one before
            segs.pop()
            continue
        return first - 1, cut
    return 0, cut


def last_good(data: bytes) -> tuple[int, int | None]:
    """(length of the valid prefix, seq of its last line) of a segment's bytes."""
    end = len(data)
    while end > 0:
        cut = data.rfind(b"\n", 0, end)
        if cut < 0:
            return 0, None
        if cut + 1 < end:  # bytes after the last newline: not a whole line
            end = cut + 1
            continue
        start = data.rfind(b"\n", 0, cut) + 1
        try:
            return end, int(json.loads(data[start:cut])["seq"])
        except (ValueError, KeyError, TypeError):
            end = start  # a garbled line: cut it too
    return 0, None


class JournalReader:
    """Reads committed records with ``seq > after_seq`` in order, waiting for new ones.

    Recent records come from the journal's memory (also those a full disk kept off the journal); older
    ones (a restart, a long outage) from the segment files. Records that are in neither (removed by the
    size bound, or never written before a restart) are skipped and counted in ``lost``.
    """

    def __init__(self, journal: Journal, after_seq: int) -> None:
        self.journal = journal
        self.after = after_seq
        self.lost = 0
        self._file: Any = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next committed record, or None if none is committed within ``timeout``."""
        deadline = time.monotonic() + timeout
        j = self.journal
        while True:
            with j.cond:
                ev = j._from_memory(self.after + 1)
                if ev is not None:
                    self.after += 1
                    self.close()
                    return ev
                if j.last_seq <= self.after:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    j.cond.wait(min(left, 0.5))
                    continue
                # older than memory: from the segments, up to what memory (or the commit) starts at
                upto = j._recent[0]["seq"] - 1 if j._recent else j.last_seq
            ev = self._from_disk(upto)
            if ev is not None:
                return ev
            if upto > self.after:
                self.lost += upto - self.after
                logger.warning("journal: events %d-%d cannot be delivered (removed when the journal was full, or "
                               "never written: disk full before a restart)", self.after + 1, upto)
                self.after = upto

    def _from_disk(self, upto: int) -> dict[str, Any] | None:
        """The first record after ``after`` (and at most ``upto``) in the segment files; a gap is counted."""
        while self._file is None:
            segs = self.journal.segments()
            segs = [s for s in segs if s[0] <= self.after + 1] or segs[:1]
            if not segs:
                return None
            try:
                self._file = open(segs[-1][1], "rb")  # noqa: SIM115 - kept open across calls
            except FileNotFoundError:  # removed by the size bound just now: list again
                continue
        while True:
            start = self._file.tell()
            line = self._file.readline()
            if not line.endswith(b"\n"):
                nxt = [s for s in self.journal.segments() if s[0] > self.after]
                self.close()
                if nxt and line == b"":
                    try:
                        self._file = open(nxt[0][1], "rb")  # noqa: SIM115
                    except FileNotFoundError:
                        return None
                    continue
                return None
            try:
                ev = json.loads(line)
                seq = int(ev["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            if seq <= self.after:
                continue
            if seq > upto:  # not for the disk to answer (in memory, or not committed yet)
                self._file.seek(start)
                return None
            if seq > self.after + 1:
                self.lost += seq - self.after - 1
                logger.warning("journal: events %d-%d are not in the journal (removed or never written)",
                               self.after + 1, seq - 1)
            self.after = seq
            return ev
