"""The durable event journal: every event is appended here, and given its ``seq``, before any sink sees it.

Layout (``<state_dir>/journal/``): segments ``events-<first seq, 12 digits>.jsonl``, one JSON object per
line, written with one ``write`` each; ``cursor-<sink>.json`` per durable sink holds the last ``seq`` it
delivered. ``seq`` continues across restarts (it is recovered from the last segment). A segment is
closed at ``segment_bytes``; the oldest segments are removed past ``max_bytes`` (a sink whose cursor
pointed into one has lost those events: the reader counts and reports them).

Readers (one per durable sink) take recent events from memory and older ones (after a restart or a
long outage) from the segments. Power cuts: on open, a torn or garbled last line (a partial write, a block
of NULs) is cut off and logged. Disk full: the failed append is reported (rate-limited) and the event
still goes to the sinks from memory; the journal tries again on the next event. ``fsync``: ``always``
(after every line and cursor), ``interval`` (at most every ``fsync_interval_s``) or ``never`` (the OS decides).
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import InputError

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^events-(\d{12})\.jsonl$")
_WARN_EVERY_S = 30.0


def ensure_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and prove a file can be written in it.

    Raises:
        InputError: ``<what> <folder>: cannot create or write (<why>)``.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{what} {folder}: cannot create or write ({e.strerror or e})") from None


@dataclass
class JournalStats:
    appended: int = 0
    failed: int = 0          # appends that did not reach the disk (the events still went to the sinks)
    repaired_bytes: int = 0  # bytes cut off a torn tail at open
    removed_segments: int = 0


class Journal:
    """Append-only, segmented, size-bounded event log with a monotonic ``seq``."""

    def __init__(self, folder: str | Path, *, fsync: str = "interval", fsync_interval_s: float = 1.0,
                 segment_bytes: int = 1 << 20, max_bytes: int = 64 << 20, memory_events: int = 4096) -> None:
        """Open (creating) the journal in ``folder`` and repair a torn tail.

        Raises:
            InputError: the folder cannot be created or written (exit 66).
        """
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync {fsync!r}: not one of always, interval, never")
        self.folder = Path(folder)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = max(4096, int(segment_bytes))
        self.max_bytes = max(self.segment_bytes * 2, int(max_bytes))
        self.stats = JournalStats()
        self.cond = threading.Condition()
        self._recent: deque[dict[str, Any]] = deque(maxlen=max(16, int(memory_events)))
        self._fd: int | None = None
        self._size = 0
        self._last_sync = 0.0
        self._dirty = False
        self._warned_at = -1e9
        ensure_writable(self.folder, "journal")
        self.last_seq = self._recover()

    # --- segments ---------------------------------------------------------------------------------
    def segments(self) -> list[tuple[int, Path]]:
        """(first seq, path), oldest first."""
        out = []
        for p in self.folder.iterdir():
            m = _SEGMENT.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def _recover(self) -> int:
        """Cut a torn tail off the newest segment and return the last good seq (0 for a new journal)."""
        segs = self.segments()
        while segs:
            first, path = segs[-1]
            data = path.read_bytes()
            good, last = _last_good(data)
            if good < len(data):
                logger.warning("journal %s: cut %d byte(s) of a torn or garbled last line (power cut?)", path,
                               len(data) - good)
                self.stats.repaired_bytes += len(data) - good
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            if last is not None:
                return last
            if good == 0 and len(segs) > 1:  # an empty newest segment: the seq is in the one before
                segs.pop()
                continue
            return first - 1
        return 0

    def _open_segment(self, first_seq: int) -> None:
        path = self.folder / f"events-{first_seq:012d}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate_if_needed(self, next_seq: int) -> None:
        if self._fd is not None and self._size < self.segment_bytes:
            return
        if self._fd is not None:
            self._sync(force=True)
            os.close(self._fd)
            self._fd = None
        segs = self.segments()
        if segs and (segs[-1][1].stat().st_size < self.segment_bytes):
            self._open_segment(segs[-1][0])  # continue the newest segment after a restart
        else:
            self._open_segment(next_seq)
        self._trim()

    def _trim(self) -> None:
        segs = self.segments()
        total = sum(p.stat().st_size for _, p in segs)
        while len(segs) > 1 and total > self.max_bytes:
            first, path = segs.pop(0)
            total -= path.stat().st_size
            path.unlink()
            self.stats.removed_segments += 1
            logger.warning("journal: over %d MB, removed the oldest segment %s", self.max_bytes >> 20, path.name)

    # --- writing ------------------------------------------------------------------------------------
    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Give ``event`` the next ``seq`` (a new dict) and append it; never raises for a full disk."""
        with self.cond:
            ev = dict(event, seq=self.last_seq + 1)
            line = (json.dumps(ev, separators=(",", ":")) + "\n").encode()
            try:
                self._rotate_if_needed(ev["seq"])
                n = os.write(self._fd, line)
                if n != len(line):  # a short write (disk full half-way): take it back, stay line-whole
                    os.ftruncate(self._fd, self._size)
                    raise OSError(28, "short write (no space left on device?)")
                self._size += n
                self._dirty = True
                self._sync()
                self.stats.appended += 1
            except OSError as e:
                self.stats.failed += 1
                self._close_fd()
                now = time.monotonic()
                if now - self._warned_at >= _WARN_EVERY_S:
                    self._warned_at = now
                    logger.error("journal %s: cannot append (%s); %d event(s) not journaled so far, they still go "
                                 "to the sinks from memory", self.folder, e.strerror or e, self.stats.failed)
            self.last_seq = ev["seq"]
            self._recent.append(ev)
            self.cond.notify_all()
            return ev

    def _from_memory(self, seq: int) -> dict[str, Any] | None:
        """Event ``seq`` if it is among the recent ones kept in memory (lock held)."""
        if self._recent:
            i = seq - self._recent[0]["seq"]
            if 0 <= i < len(self._recent):
                return self._recent[i]
        return None

    def _oldest_in_memory(self) -> int | None:
        return self._recent[0]["seq"] if self._recent else None

    def _sync(self, force: bool = False) -> None:
        if self._fd is None or not self._dirty or self.fsync == "never" and not force:
            return
        now = time.monotonic()
        if force or self.fsync == "always" or now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._fd)
            self._last_sync, self._dirty = now, False

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def close(self) -> None:
        with self.cond:
            try:
                self._sync(force=True)
            except OSError as e:
                logger.error("journal %s: final fsync failed (%s)", self.folder, e.strerror)
            self._close_fd()
            self.cond.notify_all()

    # --- cursors ------------------------------------------------------------------------------------
    def _cursor_path(self, sink: str) -> Path:
        return self.folder / f"cursor-{sink}.json"

    def cursor(self, sink: str) -> int | None:
        """The last seq ``sink`` delivered, or None for a sink the journal has not seen."""
        try:
            return int(json.loads(self._cursor_path(sink).read_text())["seq"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("journal: cursor of sink %s unreadable (%s); it resumes from the oldest event", sink, e)
            segs = self.segments()
            return segs[0][0] - 1 if segs else self.last_seq

    def set_cursor(self, sink: str, seq: int) -> None:
        """Record that ``sink`` delivered everything up to ``seq`` (atomic replace)."""
        path = self._cursor_path(sink)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps({"seq": seq}))
                if self.fsync == "always":
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                logger.error("journal %s: cannot save the cursor of sink %s (%s)", self.folder, sink, e.strerror)

    def reader(self, after_seq: int) -> JournalReader:
        return JournalReader(self, after_seq)


def _last_good(data: bytes) -> tuple[int, int | None]:
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
    """Reads events with ``seq > after_seq`` in order, waiting for new ones.

    Recent events come from the journal's memory (also those a full disk kept off the journal);
    older ones (a restart, a long outage) from the segment files. Events that are in neither (removed
    by the size bound, or never journaled before a restart) are skipped and counted in ``lost``.
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
        """The next event, or None if none arrives within ``timeout``."""
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
                oldest_in_memory = j._oldest_in_memory()
            ev = self._from_disk()
            if ev is not None:
                return ev
            want = self.after + 1
            skip_to = oldest_in_memory if oldest_in_memory is not None else j.last_seq + 1
            if skip_to > want:
                self.lost += skip_to - want
                logger.warning("journal: events %d-%d cannot be delivered (removed when the journal was full, or "
                               "never written: disk full before a restart)", want, skip_to - 1)
                self.after = skip_to - 1

    def _from_disk(self) -> dict[str, Any] | None:
        """The first journaled event after ``after`` from the segment files (a gap is counted)."""
        if self._file is None:
            segs = [s for s in self.journal.segments() if s[0] <= self.after + 1] or self.journal.segments()[:1]
            if not segs:
                return None
            self._file = open(segs[-1][1], "rb")  # noqa: SIM115 - kept open across calls
        while True:
            line = self._file.readline()
            if not line.endswith(b"\n"):
                nxt = [s for s in self.journal.segments() if s[0] > self.after]
                self.close()
                if nxt and line == b"":
                    self._file = open(nxt[0][1], "rb")  # noqa: SIM115
                    continue
                return None
            try:
                ev = json.loads(line)
                seq = int(ev["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            if seq <= self.after:
                continue
            if seq > self.after + 1:
                self.lost += seq - self.after - 1
                logger.warning("journal: events %d-%d are not in the journal (removed or never written)",
                               self.after + 1, seq - 1)
            self.after = seq
            return ev
