"""Where a sink's worker takes its records from: a bounded memory queue, or the journal from the sink's cursor.

Both feeds have one interface, so the worker (:class:`edge.sinks.base.Sink`) has one loop:

- ``put(record)``: offer a record (memory feed; the journal feed reads the journal instead and ignores it);
- ``next(timeout)``: the oldest undelivered record, the same one again until it is acked; None when none
  came within ``timeout`` (or the worker was woken);
- ``ack(record)``: delivered, or dropped for good (a record the sink cannot write);
- ``pending()``: accepted, not yet acked;
- ``stop()``: accept nothing more; ``finished()`` is then True once everything up to the stop point is acked;
- ``away(limit)``: the device is away (memory feed: move queued records into a backlog of ``limit``);
- ``abandon()``: the device is gone for good; ``close()``: release the reader;
- ``restart()``: the worker crashed; start again from the last delivered record (journal feed: a new
  reader after it; memory feed: what it holds stays as it is).

A journal feed can also ``rewind(after_seq)``: deliver again everything after ``after_seq`` (the log sink
whose file was deleted writes again what the lost file held).

Records are dicts in the event schema (``seq`` and ``v`` set). Filters (cameras, event kinds) are applied
here: a memory feed never queues an unwanted record, a journal feed skips it and moves the cursor past it.
Each feed shares the sink's condition (a re-entrant lock), so the sink's ``stats()`` and ``wait_for()`` see
one consistent state and are woken by every change.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

Record = dict[str, Any]
Wanted = Callable[[Record], bool]


class Feed(Protocol):
    """What a sink's worker delivers from."""

    durable: bool
    dropped: int   # records this feed gave up on: pushed out of a full queue, lost from the journal, abandoned

    def put(self, record: Record) -> bool: ...
    def next(self, timeout: float) -> Record | None: ...
    def ack(self, record: Record) -> None: ...
    def pending(self) -> int: ...
    def stop(self) -> None: ...
    def finished(self) -> bool: ...
    def away(self, limit: int) -> int: ...
    def abandon(self) -> int: ...
    def close(self) -> None: ...
    def restart(self) -> None: ...


def wanted_by(cameras: Any, events: Any) -> Wanted:
    """The sink's filter: only ``cameras`` (None: all) and only these event kinds."""
    cams = None if cameras is None else frozenset(cameras)
    kinds = frozenset(events)
    return lambda r: (cams is None or r.get("camera") in cams) and r.get("event") in kinds


class MemoryFeed:
    """A bounded queue filled by ``put`` (never blocks: when full the oldest is dropped and counted).

    A record handed out by ``next`` stays taken (not droppable by a full queue) until it is acked. While the
    device is away, ``away(limit)`` moves queued records behind it into that backlog, keeping the newest
    ``limit`` (a serial port may be away for long: its backlog can be larger than its queue).
    """

    durable = False

    def __init__(self, size: int, wanted: Wanted, cond: threading.Condition) -> None:
        self.size, self._wanted, self._cond = size, wanted, cond
        self._queue: collections.deque[Record] = collections.deque()
        self._taken: collections.deque[Record] = collections.deque()  # handed out or kept while away, oldest first
        self._stopped = False
        self.dropped = 0

    def put(self, record: Record) -> bool:
        """Queue ``record`` if it is wanted; True when the oldest was dropped to make room."""
        if not self._wanted(record):
            return False
        with self._cond:
            if self._stopped:
                self.dropped += 1
                return False
            full = len(self._queue) >= self.size
            if full:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(record)
            self._cond.notify_all()
            return full

    def next(self, timeout: float) -> Record | None:
        with self._cond:
            if not self._taken and not self._queue and not self._stopped:
                self._cond.wait(timeout)  # woken by put, stop and the sink's close
            if not self._taken and self._queue:
                self._taken.append(self._queue.popleft())
            return self._taken[0] if self._taken else None

    def ack(self, record: Record) -> None:
        with self._cond:
            if self._taken and self._taken[0] is record:
                self._taken.popleft()
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._taken)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def finished(self) -> bool:
        with self._cond:
            return self._stopped and not self._queue and not self._taken

    def away(self, limit: int) -> int:
        """Move what is queued into the backlog of ``limit`` (0: keep only the taken one); returns how many
        of the oldest were dropped for it."""
        dropped = 0
        with self._cond:
            while limit and self._queue:
                self._taken.append(self._queue.popleft())
                if len(self._taken) > limit:
                    self._taken.popleft()
                    dropped += 1
            if dropped:
                self.dropped += dropped
                self._cond.notify_all()
        return dropped

    def abandon(self) -> int:
        """Drop everything held and every later record (counted); returns how many were held."""
        with self._cond:
            lost = len(self._queue) + len(self._taken)
            self._queue.clear()
            self._taken.clear()
            self.dropped += lost
            self._stopped = True
            self._cond.notify_all()
            return lost

    def close(self) -> None:
        self.stop()

    def restart(self) -> None:
        pass  # the queue and the taken records are as they were: the oldest taken one is sent again


class JournalFeed:
    """Reads an :class:`edge.journal.Journal` after the sink's cursor; ``ack`` moves the cursor.

    A sink the journal has not seen starts with the next event (its cursor is set to the newest one). After
    a failed write the record stays taken and is written again; after a restart the reader resumes from the
    cursor, so nothing is lost or repeated (a crash between a write and its cursor update repeats that one
    record: the log sink recognises it in its file). Records removed from the journal before the sink got
    them are counted in ``dropped`` (the reader's ``lost``). ``stop()`` fixes the stop point at the newest
    record readers can get (``journal.last_seq``); what is left after it stays in the journal for the next
    start. ``put`` is ignored: everything comes from the journal.
    """

    durable = True

    def __init__(self, journal: Any, name: str, wanted: Wanted, cond: threading.Condition) -> None:
        self.journal, self.name, self._wanted, self._cond = journal, name, wanted, cond
        cursor = journal.cursor(name)
        if cursor is None:
            cursor = journal.last_seq
            journal.set_cursor(name, cursor)
        self._reader = journal.reader(cursor)
        self._done = cursor      # delivered (or filtered out) up to here: the cursor, as last saved
        self._lost_before = 0    # records lost by readers replaced by rewind()
        self.waiting = max(0, journal.last_seq - cursor)  # journaled before this start, not yet delivered
        self._taken: Record | None = None
        self._stop_at: int | None = None
        self._past_stop = False  # a record after the stop point was read: it stays for the next start
        self._abandoned = False
        self._reading: int | None = None  # the worker is in reader.next() from here: pending counts from it

    @property
    def dropped(self) -> int:
        return self._lost_before + self._reader.lost

    def put(self, record: Record) -> bool:
        return False

    def next(self, timeout: float) -> Record | None:
        deadline = time.monotonic() + timeout
        skipped = None
        try:
            while True:
                with self._cond:
                    if self._finished():
                        return None
                    if self._taken is not None:
                        return self._taken
                    self._reading = self._reader.after
                try:
                    rec = self._reader.next(timeout=max(0.0, deadline - time.monotonic()))  # waits on the journal
                except BaseException:
                    with self._cond:
                        self._reading = None
                    raise
                with self._cond:
                    self._reading = None
                    if rec is None:
                        return None
                    if self._stop_at is not None and rec["seq"] > self._stop_at:
                        self._past_stop = True  # not ours to deliver now: the cursor stays before it
                        self._cond.notify_all()
                        return None
                    if self._wanted(rec):
                        self._taken = rec
                        self._cond.notify_all()
                        return rec
                skipped = rec["seq"]
                if time.monotonic() >= deadline:
                    return None
        finally:
            if skipped is not None and self._taken is None:
                self._done = skipped
                self.journal.set_cursor(self.name, skipped)  # filtered out: not read again after a restart

    def ack(self, record: Record) -> None:
        self.journal.set_cursor(self.name, record["seq"])
        with self._cond:
            self._done = record["seq"]
            if self._taken is record:
                self._taken = None
            self._cond.notify_all()

    def rewind(self, after_seq: int) -> None:
        """Deliver again every record after ``after_seq`` (also across a restart: the cursor moves back).

        Records the journal no longer holds are counted in ``dropped`` when the new reader reaches them."""
        with self._cond:
            self._lost_before += self._reader.lost
            self._reader.close()
            self._reader = self.journal.reader(after_seq)
            self._taken, self._reading, self._past_stop = None, None, False
            self._done = after_seq
            self._cond.notify_all()
        self.journal.set_cursor(self.name, after_seq)

    def restart(self) -> None:
        """After a crash of the worker: a new reader after the last delivered record (the old one may have
        stopped half way through a record)."""
        self.rewind(self._done)

    def pending(self) -> int:
        with self._cond:
            done = self._taken["seq"] - 1 if self._taken is not None else \
                self._reading if self._reading is not None else self._reader.after
            top = self._stop_at if self._stop_at is not None else self.journal.last_seq
            return max(0, top - done)

    def stop(self) -> None:
        with self._cond:
            if self._stop_at is None:
                self._stop_at = self.journal.last_seq
            self._cond.notify_all()

    def finished(self) -> bool:
        with self._cond:
            return self._finished()

    def _finished(self) -> bool:
        return self._abandoned or self._stop_at is not None and self._taken is None and \
            (self._past_stop or self._reader.after >= self._stop_at)

    def away(self, limit: int) -> int:
        return 0  # the journal keeps everything (up to its size bound)

    def abandon(self) -> int:
        """The device is gone for good: what is left stays in the journal for the next start."""
        with self._cond:
            self._abandoned = True
            self.stop()
            return 0

    def close(self) -> None:
        self.stop()
        self._reader.close()
