"""The durable event journal: every event gets its ``seq`` here, and is written here before any sink sees it.

Layout (``<state_dir>/journal/``): segments ``events-<first seq, 12 digits>.jsonl``, one JSON object per line,
closed at ``segment_bytes``, the oldest removed past ``max_bytes`` (a sink whose cursor pointed into one lost
those events: its reader counts them); ``cursor-<sink>.json``: the last ``seq`` a durable sink delivered.
``seq`` continues across restarts (recovered from the last good record: :func:`edge.journal_reader.recover`).
The state folder is locked while the journal is open (one owner: :mod:`edge.state`).

Group commit: :meth:`Journal.append` (the frame loop) numbers the event, makes its record and queues it; a
writer thread writes the queue with one ``os.write`` (and, with ``fsync: always``, one fsync) per batch. Only
then is a record *committed*: ``last_seq`` moves, readers (durable sinks) see it, subscribers (memory-fed
sinks) get it; so an event a sink delivers was journaled first. ``appended_seq`` is the last ``seq`` given.
A failed write (disk full, EIO) is reported (rate-limited) and the batch still committed: the sinks get it
from memory, the next batch tries the disk again. ``fsync``: ``always`` (each batch and cursor), ``interval``
(at most every ``fsync_interval_s``, also when idle) or ``never`` (the OS decides).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import BusyError, InputError
from edge.journal_reader import JournalReader, list_segments, read_cursor, recover
from edge.state import (
    StateLock,
    ensure_writable,
    holder,
    locate_state_dir,
    lock_state_dir,
    open_regular,
    shown,
    state_dir,
    why,
)
from edge.util import RateLimit, atomic_write

if TYPE_CHECKING:
    from edge.config import Config
    from edge.events import Event

__all__ = ["Journal", "JournalStats", "MemoryJournal", "open_journal", "state_dir"]  # state_dir: from edge.state
logger = logging.getLogger(__name__)

_WARN_EVERY_S = 30.0
Record = dict[str, Any]
Subscriber = Callable[[list[Record]], None]


def open_journal(cfg: Config, *, check: bool = False) -> Journal | MemoryJournal:
    """The event journal in ``<state_dir>/journal``, with the state folder locked for as long as it is open
    (:func:`edge.state.lock_state_dir`); logs where it is and why that folder.

    ``check=True`` (``edge-tsm check``): when another process holds the folder (a running daemon), the
    journal is only read (its segments, without repairing them) and a :class:`MemoryJournal` continuing its
    seq is returned, so check's sinks are memory-fed and nothing in the folder changes; a warning says so.

    Raises:
        BusyError: another process holds the state folder (exit 75; not with ``check``).
        InputError: the folder cannot be created, written or read (exit 66).
        StateError: the lock file is not a regular file, or a damaged file cannot be moved aside (exit 65).
        ConfigError: no state folder can be found (see :func:`locate_state_dir`).
    """
    folder, where = locate_state_dir(cfg.state_dir)
    j = cfg.journal
    max_bytes = int(j.max_mb * (1 << 20))
    hint = f"; the folder is {where}: set state_dir to a folder this user can write"
    try:
        ensure_writable(folder / "journal", "journal")
    except InputError as e:
        raise InputError(f"{e}{hint}") from None
    try:
        lock = lock_state_dir(folder)
    except BusyError:
        if not check:
            raise
        return _peek(folder, max_bytes)
    except InputError as e:
        raise InputError(f"{e}{hint}") from None
    try:
        journal = Journal(folder / "journal", fsync=j.fsync, fsync_interval_s=j.fsync_interval_s,
                          max_bytes=max_bytes, segment_bytes=min(1 << 20, max_bytes // 4), lock=lock)
    except InputError as e:
        lock.release()
        raise InputError(f"{e}{hint}") from None
    except BaseException:
        lock.release()
        raise
    logger.info("journal %s (in %s): last seq %d, fsync %s", journal.folder, where, journal.last_seq, j.fsync)
    return journal


def _peek(folder: Path, max_bytes: int) -> MemoryJournal:
    """``check`` beside a running daemon: read the journal without changing it; a MemoryJournal after its seq.

    Raises:
        InputError: its segments cannot be read.
    """
    try:
        last, _ = recover(folder / "journal", max_bytes, repair=False)
    except OSError as e:
        raise InputError(f"journal {shown(folder / 'journal')}: cannot read its segments ({why(e)})") from None
    pid = holder(folder)
    logger.warning("state folder %s is in use by another edge-tsm (%s, the daemon?): check reads its journal (last "
                   "seq %d) but does not open it for writing, and check's sinks are not journal-fed", shown(folder),
                   f"PID {pid}" if pid else "PID not written yet", last)
    return MemoryJournal(last)


def _record(event: Event | Mapping[str, Any], seq: int) -> Record:
    """The schema dict of ``event`` with ``seq``: ``Event.record``, or a record dict (tools, tests) renumbered."""
    return {**event, "seq": seq} if isinstance(event, Mapping) else event.record(seq)


@dataclass
class JournalStats:
    appended: int = 0        # records written to a segment
    failed: int = 0          # records that did not reach the disk (the sinks still got them from memory)
    batches: int = 0         # group commits
    fsyncs: int = 0
    repaired_bytes: int = 0  # bytes cut off a torn tail at open
    removed_segments: int = 0
    cursor_failed: int = 0   # cursor saves that failed


class MemoryJournal:
    """``seq`` for the commands that read a file and never journal (classify, eval-events, run --demo, the
    bench): the interface of :class:`Journal` (append, subscribe, flush, close, last_seq), committing in
    ``append`` itself; subscribers are called in the appending thread and their errors propagate."""

    def __init__(self, last_seq: int = 0) -> None:
        self.last_seq = self.appended_seq = last_seq
        self._subscribers: list[Subscriber] = []
        self._lock = threading.RLock()  # a subscriber may append (re-entrant), in this same thread

    def append(self, event: Event | Mapping[str, Any]) -> int:
        with self._lock:
            seq = self.appended_seq + 1
            batch = [_record(event, seq)]
            self.appended_seq = self.last_seq = seq
            for callback in list(self._subscribers):
                callback(batch)
        return seq

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        self._subscribers = [c for c in self._subscribers if c != callback]

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        pass


class Journal:
    """Append-only, segmented, size-bounded event log with a monotonic ``seq`` and a group-committing writer."""

    def __init__(self, folder: str | Path, *, fsync: str = "interval", fsync_interval_s: float = 1.0,
                 segment_bytes: int = 1 << 20, max_bytes: int = 64 << 20, memory_events: int = 4096,
                 lock: StateLock | None = None) -> None:
        """Open (creating) the journal in ``folder`` and repair it (see :func:`edge.journal_reader.recover`).
        The writer starts at the first append. ``lock``: the state folder's, released by :meth:`close`.

        Raises:
            InputError: the folder cannot be created, written or read (exit 66).
            StateError: a damaged file in it cannot be moved aside (exit 65).
        """
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync {fsync!r}: not one of always, interval, never")
        self.folder = Path(folder)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = max(4096, int(segment_bytes))
        self.max_bytes = max(self.segment_bytes * 2, int(max_bytes))
        self.stats = JournalStats()
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)    # commits: readers and flush() wait on it
        self._wake = threading.Condition(self._lock)   # appends and close: the writer waits on it
        self._recent: deque[Record] = deque(maxlen=max(16, int(memory_events)))  # committed, in seq order
        self._queue: list[tuple[Record, bytes]] = []   # appended, not yet taken by the writer
        self._subscribers: list[Subscriber] = []
        self._calling = False                          # the writer is calling the subscribers
        self._writer: threading.Thread | None = None
        self._closing = False
        self._fd: int | None = None                    # the writer's (after the first append)
        self._size = 0
        self._last_sync = 0.0
        self._dirty = False
        self._append_warn = RateLimit(_WARN_EVERY_S)   # one per kind of message: neither silences the other
        self._cursor_warn = RateLimit(_WARN_EVERY_S)
        self._subscriber_warn = RateLimit(_WARN_EVERY_S)
        self._state_lock = lock
        ensure_writable(self.folder, "journal")
        try:  # committed: what readers get
            self.last_seq, self.stats.repaired_bytes = recover(self.folder, self.max_bytes)
        except OSError as e:
            raise InputError(f"journal {shown(self.folder)}: cannot read its segments ({why(e)})") from None
        self.appended_seq = self._handed_seq = self.last_seq  # numbered: what append gave out; subscribers had

    # --- segments ---------------------------------------------------------------------------------
    def segments(self) -> list[tuple[int, Path]]:
        """(first seq, path), oldest first."""
        return list_segments(self.folder)

    def _open_segment(self, first_seq: int) -> None:
        path = self.folder / f"events-{first_seq:012d}.jsonl"
        self._fd = open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)  # never through a symlink or a FIFO
        self._size = os.fstat(self._fd).st_size
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":  # a write failed half-way earlier
            self._size += os.write(self._fd, b"\n")  # end that line: readers skip it, the next one stays whole

    def _rotate_if_needed(self, next_seq: int) -> None:
        if self._fd is not None and self._size < self.segment_bytes:
            return
        if self._fd is not None:
            self._sync(force=True)
            os.close(self._fd)
            self._fd = None
        segs = self.segments()
        if segs and (segs[-1][1].stat().st_size < self.segment_bytes):
            self._open_segment(segs[-1][0])  # continue the newest segment after a restart or a failure
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

    # --- appending (the frame loop) -----------------------------------------------------------------
    def append(self, event: Event | Mapping[str, Any]) -> int:
        """Give ``event`` the next ``seq``, make its record and queue it for the writer; returns the seq.

        Never waits for the disk. The record reaches readers and subscribers once committed.

        Raises:
            RuntimeError: the journal is closed.
        """
        with self._lock:
            if self._closing:
                raise RuntimeError(f"journal {self.folder}: append after close")
            seq = self.appended_seq + 1
            record = _record(event, seq)
            self._queue.append((record, (json.dumps(record, separators=(",", ":")) + "\n").encode()))
            self.appended_seq = seq
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="journal-writer", daemon=True)
                self._writer.start()
            self._wake.notify()
        return seq

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(records)`` in the writer thread with each batch of committed records, in seq order,
        from the next batch on (memory-fed sinks). Records are shared: do not modify them."""
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop calling ``callback``; once this returns it is not running either (unless this is its own call)."""
        with self._lock:
            self._subscribers = [c for c in self._subscribers if c != callback]  # == : bound methods are new objects
            if threading.current_thread() is not self._writer:
                self.cond.wait_for(lambda: not self._calling)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything appended so far is committed and given to the subscribers; False if
        ``timeout`` s passed first."""
        with self._lock:
            target = self.appended_seq
            return self.cond.wait_for(lambda: self._handed_seq >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued (up to ``timeout`` s), stop the writer, fsync and close the segment.
        Readers go on working (from memory and the segments)."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            writer = self._writer
        if writer is not None:
            writer.join(timeout)
            if writer.is_alive():
                logger.error("journal %s: the writer is still in a disk write after %.1f s (a hung disk?); "
                             "%d event(s) not committed", self.folder, timeout, self.appended_seq - self.last_seq)
        else:
            self._finish()
        if self._state_lock is not None:
            self._state_lock.release()

    # --- the writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    due = self._sync_due()
                    if due is not None and due <= 0:
                        break
                    self._wake.wait(due)
                batch, self._queue = self._queue, []
                stop = self._closing and not batch
            if stop:
                break
            if batch:
                self._write(batch)
                self._commit([record for record, _ in batch])
            else:
                self._sync_quietly(force=False)  # fsync: interval, and nothing new came in the interval
        self._finish()

    def _sync_due(self) -> float | None:
        """Seconds until an interval fsync of written data is due; None when none will be."""
        if self.fsync != "interval" or not self._dirty or self._fd is None:
            return None
        return self._last_sync + self.fsync_interval_s - time.monotonic()

    def _write(self, batch: list[tuple[Record, bytes]]) -> None:
        """Write ``batch``: one ``os.write`` per segment it touches (one, unless it rotates), then one fsync."""
        done = 0
        try:
            while done < len(batch):
                self._rotate_if_needed(batch[done][0]["seq"])
                end, size = done, 0
                while end < len(batch) and self._size + size < self.segment_bytes:
                    size += len(batch[end][1])
                    end += 1
                data = b"".join(line for _, line in batch[done:end])
                n = os.write(self._fd, data)
                if n != len(data):  # a short write (disk full half-way): take it back, stay line-whole
                    os.ftruncate(self._fd, self._size)
                    raise OSError(errno.ENOSPC, "short write (no space left on device?)")
                self._size += n
                self._dirty = True
                done = end
            self._sync()
            self.stats.appended += done
        except Exception as e:  # noqa: BLE001 - OSError: the disk; anything else: a bug, which must not stop the writer
            failed = len(batch) - done if done < len(batch) else len(batch)  # all of it when the fsync failed
            self.stats.appended += len(batch) - failed
            self.stats.failed += failed
            self._close_fd()
            if self._append_warn.allow():
                more = self._append_warn.take_suppressed()
                logger.error("journal %s: cannot append (%s); %d event(s) not journaled so far, they still go to "
                             "the sinks from memory%s", self.folder, getattr(e, "strerror", None) or e,
                             self.stats.failed, f" ({more} more failed batches since the last report)" if more else "",
                             exc_info=not isinstance(e, OSError))

    def _commit(self, records: list[Record]) -> None:
        with self._lock:
            self._recent.extend(records)
            self.last_seq = records[-1]["seq"]
            self.stats.batches += 1
            subscribers, self._calling = self._subscribers, True
            self.cond.notify_all()
        for callback in subscribers:
            try:
                callback(records)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the journal
                if self._subscriber_warn.allow():
                    logger.exception("journal: subscriber %r failed on events %d-%d", callback,
                                     records[0]["seq"], records[-1]["seq"])
        with self._lock:
            self._calling, self._handed_seq = False, records[-1]["seq"]
            self.cond.notify_all()

    def _sync(self, force: bool = False) -> None:
        if self._fd is None or not self._dirty or self.fsync == "never" and not force:
            return
        now = time.monotonic()
        if force or self.fsync == "always" or now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._fd)
            self.stats.fsyncs += 1
            self._last_sync, self._dirty = now, False

    def _sync_quietly(self, force: bool) -> None:
        try:
            self._sync(force=force)
        except OSError as e:
            logger.error("journal %s: fsync failed (%s)", self.folder, e.strerror or e)
            self._close_fd()

    def _finish(self) -> None:
        self._sync_quietly(force=True)
        self._close_fd()
        with self._lock:
            self.cond.notify_all()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._dirty = None, False

    # --- reading ------------------------------------------------------------------------------------
    def _from_memory(self, seq: int) -> Record | None:
        """Committed record ``seq`` if it is among the recent ones kept in memory (lock held)."""
        if self._recent:
            i = seq - self._recent[0]["seq"]
            if 0 <= i < len(self._recent):
                return self._recent[i]
        return None

    # --- cursors ------------------------------------------------------------------------------------
    def _cursor_path(self, sink: str) -> Path:
        return self.folder / f"cursor-{sink}.json"

    def cursor(self, sink: str) -> int | None:
        """The last seq ``sink`` delivered, or None for a sink the journal has not seen; a damaged cursor file
        is moved aside (see :func:`edge.journal_reader.read_cursor`)."""
        return read_cursor(self._cursor_path(sink), sink, self.last_seq, lambda: self.segments()[:1])

    def set_cursor(self, sink: str, seq: int) -> None:
        """Record that ``sink`` delivered everything up to ``seq`` (atomic replace; synced with fsync always)."""
        try:
            atomic_write(self._cursor_path(sink), json.dumps({"seq": seq}), mode=0o640,
                         fsync=self.fsync == "always")
        except OSError as e:
            self.stats.cursor_failed += 1
            if self._cursor_warn.allow():
                more = self._cursor_warn.take_suppressed()
                logger.error("journal %s: cannot save the cursor of sink %s (%s)%s", self.folder, sink,
                             e.strerror or e, f" ({more} more failed save(s) since the last report)" if more else "")

    def reader(self, after_seq: int) -> JournalReader:
        return JournalReader(self, after_seq)
