"""Reading the event journal's segment files as untrusted input: the segment list, the repair at open, and
:class:`JournalReader`, with which durable sinks read committed records. The writing side, and the layout,
are in :mod:`edge.journal`.

A record is a JSON object whose ``seq`` is an integer in 1..10^12-1 (:func:`record_seq`); anything else on
a line (a torn write, ``{"seq": 1e400}``, ``{"seq": true}``, a line of NULs) is not a record. At open
(:func:`recover`), with the state folder locked:

- an entry named like a segment that is not a regular file (a folder, FIFO, socket, symlink) is moved aside
  (``<name>.bad-<UTC time>``, a warning) and never opened;
- a segment whose first record disagrees with its name (``events-999999999999.jsonl`` holding a copy of
  another segment, or no record at all) is moved aside whole: ``seq`` never jumps on a junk name;
- the newest segment's tail is repaired: a torn last line (no newline: a power cut) is cut off; whole lines
  after the last good record (garbled, or a seq not above the ones before) are cut off and kept aside in
  ``<name>.bad-<UTC time>``; ``seq`` continues from the last good record.

Bad lines in the middle of a segment are left where they are: a reader skips each with a warning
(rate-limited) and counts it; it never raises into a sink.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import StateError
from edge.state import NotRegular, file_kind, open_regular, quarantine, read_regular, shown, why
from edge.util import RateLimit

if TYPE_CHECKING:
    from edge.journal import Journal

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^events-(\d{12})\.jsonl$")
MAX_SEQ = 10**12 - 1         # segment names have 12 digits
_HEAD = 1 << 16              # bytes read to find an older segment's first record
_MAX_LINE = 1 << 20          # a longer line is not a record (ours are a few hundred bytes)
Record = dict[str, Any]


def record_seq(obj: Any) -> int | None:
    """The ``seq`` of a journal record, or None when ``obj`` is not one (not an object; ``seq`` missing, not an
    integer, a bool, a float such as 1e400, or outside 1..10^12-1)."""
    if not isinstance(obj, dict):
        return None
    seq = obj.get("seq")
    return seq if type(seq) is int and 1 <= seq <= MAX_SEQ else None


def parse_line(line: bytes) -> Record | None:
    """The record on one line of a segment, or None when the line is not a record."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an int of 5000 digits, nested too deep
        return None
    return obj if record_seq(obj) is not None else None


def list_segments(folder: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of the journal's segments in ``folder``, oldest first: regular files only (a FIFO or a
    folder named like a segment is never opened; :func:`recover` moves it aside)."""
    out = []
    with os.scandir(folder) as entries:
        for entry in entries:
            m = _SEGMENT.match(entry.name)
            if m and int(m.group(1)) >= 1 and entry.is_file(follow_symlinks=False):
                out.append((int(m.group(1)), Path(entry.path)))
    return sorted(out)


def recover(folder: Path, limit: int, repair: bool = True) -> tuple[int, int]:
    """Check the segments and repair the newest one's tail (see the module's docstring): (the last good seq, 0
    for a new journal; bytes cut). ``limit``: a segment larger than this is not one of ours. ``repair=False``
    changes nothing (``check`` while a daemon holds the folder): the seq the repair would give.

    Raises:
        OSError: the folder or a segment cannot be read.
        StateError: a damaged entry cannot be moved aside.
    """
    def aside(path: Path, reason: str) -> None:
        if repair:
            quarantine(path, reason)
        else:
            logger.warning("%s: %s (the daemon moves it aside at its next start)", shown(path), reason)

    for entry in list(os.scandir(folder)):
        m = _SEGMENT.match(entry.name)
        if m and not entry.is_file(follow_symlinks=False):
            try:
                kind = file_kind(entry.stat(follow_symlinks=False).st_mode)
            except OSError:
                continue  # gone meanwhile
            aside(Path(entry.path), f"{kind} where a journal segment should be")
        elif m and int(m.group(1)) == 0:
            aside(Path(entry.path), "no journal segment is named seq 0")
    segs = list_segments(folder)
    for first, path in segs[:-1]:  # older segments: the first record only (cheap)
        problem = _disagrees(first, _head(path))
        if problem:
            aside(path, problem)
    segs = [s for s in list_segments(folder) if s in segs] if repair else segs
    cut, empties = 0, []
    while segs:
        first, path = segs.pop()
        try:
            data = read_regular(path, limit)
        except NotRegular as e:
            aside(path, f"{e.strerror} where a journal segment should be")
            continue
        except OSError as e:
            if e.errno != errno.EFBIG:
                raise
            aside(path, f"{why(e)}: not a journal segment")
            continue
        end = data.rfind(b"\n") + 1
        last, good, older = 0, 0, None
        for start, stop in _lines(data, end):
            rec = parse_line(data[start:stop])
            if rec is None:
                continue
            if not last and rec["seq"] < first:
                older = rec["seq"]  # the first record is older than the name says
                break
            if rec["seq"] > last:
                last, good = rec["seq"], stop + 1
        if older is not None or not last and end:
            aside(path, "its lines are not journal records" if older is None else
                  f"its first record (seq {older}) disagrees with its name")
            continue
        if not last:  # empty, or only a torn line: the seq is in the segment before (decided below)
            empties.append((first, path, data))
            continue
        if good < len(data):
            cut += len(data) - good
            _cut(path, data, good, end, repair)
        return last, cut + _settle(empties, last, aside, repair)
    return 0, cut + _settle(empties, 0, aside, repair)


def _settle(empties: list[tuple[int, Path, bytes]], last: int, aside: Callable[[Path, str], None],
            repair: bool) -> int:
    """The newest segments that hold no record: the one named ``last + 1`` is the next segment (a torn line in
    it, a write the power cut short, is cut off); any other is moved aside whole. Returns the bytes cut."""
    cut = 0
    for name, path, data in empties:
        if name == last + 1:
            if data:
                _cut(path, data, 0, 0, repair)
                cut += len(data)
        else:
            aside(path, f"holds no record, and its name disagrees with the last record (seq {last})" if last else
                  "holds no record, and no record is before it")
    return cut


def _lines(data: bytes, end: int):
    """(start, end) of each whole line of ``data[:end]``, without its newline."""
    start = 0
    while start < end:
        stop = data.index(b"\n", start)
        yield start, stop
        start = stop + 1


def _cut(path: Path, data: bytes, good: int, end: int, repair: bool) -> None:
    """Cut ``data[good:]`` off the segment: whole lines kept aside in ``<name>.bad-<time>``, a torn line dropped."""
    whole, torn = end - good if end > good else 0, len(data) - max(end, good)
    what = ", ".join(x for x in (f"{whole} byte(s) of whole lines that are not good records" if whole else "",
                                 f"a torn last line of {torn} byte(s) (power cut?)" if torn else "") if x)
    if not repair:
        logger.warning("journal %s: %s at its end (the daemon cuts it at its next start)", shown(path), what)
        return
    kept = ""
    if whole:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.bad-{stamp}-{good}")
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, data[good:end])
            finally:
                os.close(fd)
            kept = f"; the whole lines are kept in {aside.name}"
        except OSError as e:
            kept = f"; they could not be kept aside ({why(e)})"
    logger.warning("journal %s: cut %s: torn or garbled%s", shown(path), what, kept)
    fd = open_regular(path, os.O_RDWR)
    try:
        os.ftruncate(fd, good)
        os.fsync(fd)
    finally:
        os.close(fd)


def _head(path: Path) -> bytes:
    try:
        fd = open_regular(path)
    except OSError:
        return b""  # gone or not regular: the newest-segment pass or the reader deals with it
    try:
        return os.read(fd, _HEAD)
    finally:
        os.close(fd)


def _disagrees(first: int, head: bytes) -> str | None:
    """Why an older segment starting with ``head`` cannot be the one named ``first`` (None: it can)."""
    if not head:
        return None  # empty: readers pass over it
    for line in head.split(b"\n")[:-1] if b"\n" in head else []:
        rec = parse_line(line)
        if rec is not None:
            return None if rec["seq"] >= first else f"its first record (seq {rec['seq']}) disagrees with its name"
    return "it does not start with a journal record"


def read_cursor(path: Path, sink: str, last_seq: int, oldest: Callable[[], list[tuple[int, Path]]]) -> int | None:
    """The seq in cursor file ``path`` of ``sink``, or None when there is none.

    A file that is not a regular file or not ``{"seq": N}`` (0 <= N <= 10^12-1) is moved aside with a warning
    and the sink resumes from the oldest event (``oldest()``: the first segment; nothing lost, repeats possible);
    a cursor past ``last_seq`` (the journal's tail was lost: a power cut with ``fsync: never``) resumes after it.
    """
    try:
        obj = json.loads(read_regular(path, 4096))
        seq = obj.get("seq") if isinstance(obj, dict) else None
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"not {{\"seq\": N}} with N a whole number from 0 to {MAX_SEQ}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as e:
        first = oldest()
        resume = first[0][0] - 1 if first else last_seq
        reason = f"cursor of sink {sink} unreadable ({why(e)}); it resumes from the oldest event (seq {resume + 1})"
        try:
            quarantine(path, reason)
        except StateError:
            logger.warning("journal: %s", reason)
        return resume
    if seq > last_seq:
        logger.warning("journal: cursor of sink %s (seq %d) is past the last record (seq %d): the journal's tail "
                       "was lost (power cut?); it resumes after seq %d", sink, seq, last_seq, last_seq)
        return last_seq
    return seq


class JournalReader:
    """Reads committed records with ``seq > after_seq`` in order, waiting for new ones.

    Recent records come from the journal's memory (also those a full disk kept off the journal); older
    ones (a restart, a long outage) from the segment files. Records that are in neither (removed by the
    size bound, or never written before a restart) are skipped and counted in ``lost``; lines of a segment
    that are not records are skipped with a warning and counted in ``skipped``.
    """

    def __init__(self, journal: Journal, after_seq: int) -> None:
        self.journal = journal
        self.after = after_seq
        self.lost = 0
        self.skipped = 0
        self._file: Any = None
        self._name = ""
        self._unreadable: set[str] = set()
        self._warn = RateLimit(30.0)

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

    def _segments(self) -> list[tuple[int, Path]]:
        return [s for s in self.journal.segments() if s[1].name not in self._unreadable]

    def _open(self, path: Path) -> bool:
        """Open segment ``path`` for reading; False when it is gone or cannot be read (then skipped, warned)."""
        try:
            self._file = os.fdopen(open_regular(path), "rb")
        except FileNotFoundError:  # removed by the size bound just now
            return False
        except OSError as e:
            self._unreadable.add(path.name)
            logger.warning("journal %s: cannot read it (%s); its events are skipped", shown(path), why(e))
            return False
        self._name = path.name
        return True

    def _from_disk(self, upto: int) -> dict[str, Any] | None:
        """The first record after ``after`` (and at most ``upto``) in the segment files; a gap is counted."""
        while self._file is None:
            segs = self._segments()
            segs = [s for s in segs if s[0] <= self.after + 1] or segs[:1]
            if not segs:
                return None
            self._open(segs[-1][1])
        while True:
            start = self._file.tell()
            line = self._file.readline(_MAX_LINE)
            if len(line) == _MAX_LINE and not line.endswith(b"\n"):  # not a record: pass over the rest of it
                while line and not line.endswith(b"\n"):
                    line = self._file.readline(_MAX_LINE)
                self._bad(start, "longer than any record")
                continue
            if not line.endswith(b"\n"):
                nxt = [s for s in self._segments() if s[0] > self.after]
                self.close()
                if nxt and line == b"":
                    if not self._open(nxt[0][1]):
                        return None
                    continue
                return None
            ev = parse_line(line)
            if ev is None:
                if line.strip():
                    self._bad(start, "not a journal record")
                continue
            seq = ev["seq"]
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

    def _bad(self, offset: int, what: str) -> None:
        self.skipped += 1
        if self._warn.allow():
            more = self._warn.take_suppressed()
            logger.warning("journal %s: the line at byte %d is %s; skipped%s", self._name, offset, what,
                           f" ({more} more such line(s) since the last report)" if more else "")
