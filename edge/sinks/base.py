"""The Sink base class: a bounded queue and one worker thread per sink, so a slow, full or
unplugged sink never stalls inference.

``submit()`` only filters and appends to a bounded deque (when full the oldest is dropped, counted,
warned about at most every few seconds). The worker delivers in order through ``_write()``; when a
write fails it closes the device, keeps the event, reopens with exponential backoff and jitter
("reconnecting") and resends what it kept, in order. A sink that may be away long (serial) sets
:attr:`Sink.max_pending`: while away, the worker moves newer events into that backlog too.
Subclasses implement ``_open_device()``, ``_write(event)`` and ``_close_device()``.
"""
from __future__ import annotations

import collections
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.errors import SinkError

logger = logging.getLogger(__name__)

_WAIT_S = 0.25        # longest blind wait of the worker (close() also wakes it directly)
_JOIN_S = 1.0         # after close()'s timeout: how long to wait for a worker stuck in a write
_WARN_EVERY_S = 10.0  # repeated warnings (drops, failing writes) at most this often
RETRY_S = (0.5, 30.0)  # default backoff (first, longest) between reopen attempts


def json_line(ev: dict[str, Any]) -> str:
    """The event as one compact JSON line."""
    return json.dumps(ev, separators=(",", ":")) + "\n"


def text_line(ev: dict[str, Any]) -> str:
    """``START swipe_left 0.93 door``: for serial consumers that parse words, not JSON."""
    return f"{str(ev['event']).upper()} {ev['label']} {float(ev['score']):.2f} {ev['camera']}\n"


FORMATTERS: dict[str, Callable[[dict[str, Any]], str]] = {"json": json_line, "text": text_line}


def cause(e: BaseException) -> str:
    """An OS or driver error as a short one-line cause (``No such file or directory``)."""
    if isinstance(e, OSError) and isinstance(e.errno, int) and e.strerror and "[Errno" not in e.strerror:
        return e.strerror
    text = " ".join(str(e).split())
    found = re.findall(r"\[Errno \d+\] ([^:]+)", text)  # pyserial: "write failed: [Errno 5] Input/output error"
    return found[-1].strip() if found else text or type(e).__name__


class DeviceGone(Exception):
    """Raised by ``_write`` when the device is gone for good (stdout's reader closed the pipe)."""


class _RateLimit:
    """Lets a repeated warning through at most once per ``period`` seconds."""

    def __init__(self, period: float = _WARN_EVERY_S) -> None:
        self.period, self._next = period, 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.period
        return True


class Sink:
    """One event destination behind a bounded queue and its own worker thread.

    ``cfg`` is the sink's config model (``queue_size``, ``cameras``, ``events`` and its own keys);
    ``name`` is the sink's name from :func:`edge.config.sink_names`. A sink is opened once and
    closed once; a config reload makes new sinks.
    """

    type = "?"
    durable_default = False    # journaled unless the config says otherwise (sinks that must not miss events)
    max_pending = 0            # events the worker takes off the queue while the device is away (0: the failed one)
    retry_s: tuple[float, float] = RETRY_S

    def __init__(self, cfg: Any, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.target = self.type      # subclass: what it writes to, for messages ("port /dev/ttyUSB0")
        self._cameras = None if cfg.cameras is None else frozenset(cfg.cameras)
        self._kinds = frozenset(cfg.events)
        self._cond = threading.Condition()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._kept: collections.deque[dict[str, Any]] = collections.deque()  # taken, not yet delivered
        self._stop = threading.Event()    # close(): deliver what is there, then stop
        self._abort = threading.Event()   # close()'s timeout passed: stop now
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._state = "closed"
        self._device_open = False
        self._writing = False
        self._delivered = self._dropped = self._errors = 0
        self._journal: Any = None    # durable sinks read from the journal (attach_journal) instead of the queue
        self._reader: Any = None
        self._stop_at = 0            # journal mode: close() delivers up to this seq
        self._attempts = 0           # failures since the last delivered event (sets the backoff)
        self._outage = False         # a write failed and none has worked since
        self._down_since = 0.0
        self._rng = random.Random()
        self._drop_warn, self._fail_warn = _RateLimit(), _RateLimit()

    @property
    def where(self) -> str:
        """Message prefix: ``sink serial: port /dev/ttyUSB0``."""
        return f"sink {self.name}: {self.target}"

    # --- caller side --------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the device in the caller's thread (so a bad one fails at start), then start the worker.

        Raises:
            SinkError: the device or file cannot be opened (exit 69); one line naming sink, device, cause.
        """
        if self._thread is not None:
            return
        if self._stop.is_set():
            raise SinkError(f"{self.where}: already closed (a sink is opened once; make a new one)")
        self._open_device()
        with self._cond:
            self._device_open = True
            self._state = "open"
            self._cond.notify_all()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()
        logger.info("%s open%s", self.where, self._details())

    @property
    def durable(self) -> bool:
        """Delivered from the journal (resumes after an outage or a restart) rather than a memory queue."""
        configured = getattr(self.cfg, "durable", None)
        return self.durable_default if configured is None else bool(configured)

    def attach_journal(self, journal: Any) -> int:
        """Deliver from ``journal`` (an :class:`edge.journal.Journal`), starting after this sink's
        cursor; a sink the journal has not seen starts with the next event. Call before open().
        Returns how many journaled events are waiting for this sink."""
        cursor = journal.cursor(self.name)
        if cursor is None:
            cursor = journal.last_seq
            journal.set_cursor(self.name, cursor)
        self._journal, self._reader = journal, journal.reader(cursor)
        waiting = max(0, journal.last_seq - cursor)
        if waiting:
            logger.info("%s: %d journaled event(s) not yet delivered; sending them first", self.where, waiting)
        return waiting

    def _wanted(self, event: dict[str, Any]) -> bool:
        return ((self._cameras is None or event.get("camera") in self._cameras)
                and event.get("event") in self._kinds)

    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event for delivery; never blocks. Events the filters exclude are ignored.

        The event's ``seq`` is the daemon's (the journal's): the same event has the same ``seq`` in
        every sink, and a sink's consumer sees a gap where one was dropped. A journaled sink ignores
        submit(): its worker reads the journal.
        """
        if self._reader is not None or not self._wanted(event):
            return
        warn = False
        with self._cond:
            if not self._accepting:
                self._dropped += 1
                return
            if len(self._queue) >= self.cfg.queue_size:
                self._queue.popleft()
                self._dropped += 1
                warn = self._drop_warn.allow()
            self._queue.append(event)
            dropped = self._dropped
            self._cond.notify_all()
        if warn:
            logger.warning("%s: queue full (%d events), dropped the oldest; %d dropped so far", self.where,
                           self.cfg.queue_size, dropped)

    def close(self, timeout: float = 5.0) -> int:
        """Stop accepting, deliver what is queued for up to ``timeout`` s, stop the worker, close the device.

        Returns how many accepted events were still undelivered (logged when > 0); events dropped
        earlier are in ``stats()['dropped']``.
        """
        with self._cond:
            self._accepting = False
            if self._journal is not None:
                self._stop_at = self._journal.last_seq
                if self._state == "reconnecting":  # down: what it holds stays in the journal, no use waiting
                    timeout = min(timeout, 0.05)
            self._stop.set()
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(max(0.0, timeout))
            if thread.is_alive():
                self._abort.set()
                with self._cond:
                    if self._writing:  # the worker cannot close the device while we hold the lock
                        self._interrupt()
                    self._cond.notify_all()
                thread.join(_JOIN_S)
                if thread.is_alive():  # blocked in a driver write; it closes the device when that returns
                    logger.warning("%s: worker still blocked in a write after %.1f s; left behind", self.where,
                                   max(0.0, timeout) + _JOIN_S)
        else:
            self._close_quietly()
        with self._cond:
            left = self._pending()
            self._state = "closed"
            self._cond.notify_all()
        if self._reader is not None:
            self._reader.close()
            if left:
                logger.info("%s: %d event(s) stay in the journal, delivered at the next start", self.where, left)
        elif left:
            logger.warning("%s: closed with %d event(s) not delivered", self.where, left)
        return left

    def _pending(self) -> int:
        """Accepted, not yet delivered (lock held)."""
        if self._reader is not None:
            kept_seq = self._kept[0]["seq"] - 1 if self._kept else self._reader.after
            return max(0, (self._stop_at if self._stop.is_set() else self._journal.last_seq) - kept_seq)
        return len(self._queue) + len(self._kept)

    def stats(self) -> dict[str, Any]:
        """Counters: delivered, dropped, pending (queued or kept), errors (failed writes), state."""
        with self._cond:
            return self._stats()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Wait until ``predicate(stats())`` holds (True) or ``timeout`` s pass (False); for tests and drains."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._stats()), timeout)

    def _stats(self) -> dict[str, Any]:
        lost = self._reader.lost if self._reader is not None else 0
        return {"delivered": self._delivered, "dropped": self._dropped + lost,
                "pending": self._pending(), "errors": self._errors, "state": self._state}

    # --- subclass hooks -----------------------------------------------------------------------------
    def _details(self) -> str:
        """Extra words for the 'open' log line, e.g. ' (115200 baud, text)'."""
        return ""

    def _open_device(self) -> None:
        """Open (or reopen) the device. Raises: SinkError (one line)."""
        raise NotImplementedError

    def _write(self, event: dict[str, Any]) -> None:
        """Deliver one event, all or raise (OSError, a driver's error, or DeviceGone)."""
        raise NotImplementedError

    def _close_device(self) -> None:
        """Release the device; called once per successful open, from the worker once it runs."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake a ``_write`` blocked on a stalled device (called by close() after its timeout)."""

    # --- worker -------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                if self._state == "reconnecting" and not self._reconnect():
                    continue
                ev = self._next()
                if ev is None:
                    break
                err = self._attempt(ev)
                if isinstance(err, DeviceGone):
                    self._gone(err)
                    break
                if isinstance(err, OSError):  # serial.SerialException is an OSError too
                    self._failed(err)
                    continue
                if err is not None:  # a bad event must not stop the sink (nor be retried forever)
                    logger.error("%s: cannot write event %r (%s: %s); dropped", self.where, ev,
                                 type(err).__name__, err, exc_info=err)
                    if self._journal is not None:
                        self._journal.set_cursor(self.name, ev["seq"])
                    with self._cond:
                        self._kept.popleft()
                        self._dropped, self._errors = self._dropped + 1, self._errors + 1
                        self._cond.notify_all()
                    continue
                if self._journal is not None:
                    self._journal.set_cursor(self.name, ev["seq"])
                with self._cond:
                    self._kept.popleft()
                    self._delivered += 1
                    self._attempts = 0
                    recovered, self._outage = self._outage, False
                    self._cond.notify_all()
                if recovered:
                    logger.info("%s: delivering again after %.1f s (%d failed write(s) so far)", self.where,
                                time.monotonic() - self._down_since, self._errors)
        finally:
            self._close_quietly()

    def _attempt(self, ev: dict[str, Any]) -> Exception | None:
        """One ``_write``; returns its error, if any. ``_writing`` tells close() it may interrupt."""
        with self._cond:
            self._writing = True
        try:
            self._write(ev)
            return None
        except Exception as e:  # noqa: BLE001 - sorted by the caller
            return e
        finally:
            with self._cond:
                self._writing = False

    def _next(self) -> dict[str, Any] | None:
        """The oldest undelivered event (left in ``_kept`` until written); None when it is time to stop."""
        if self._reader is not None:
            return self._next_journaled()
        with self._cond:
            while not self._abort.is_set():
                if self._kept:
                    return self._kept[0]
                if self._queue:
                    self._kept.append(self._queue.popleft())
                    return self._kept[0]
                if self._stop.is_set():
                    return None
                self._cond.wait(_WAIT_S)
            return None

    def _next_journaled(self) -> dict[str, Any] | None:
        """Journal mode: the next wanted event from the reader (filtered ones just move the cursor)."""
        skipped = None
        try:
            while not self._abort.is_set():
                with self._cond:
                    if self._kept:
                        return self._kept[0]
                    if self._stop.is_set() and self._reader.after >= self._stop_at:
                        return None
                ev = self._reader.next(timeout=_WAIT_S)  # waits on the journal, not on our lock
                if ev is None:
                    continue
                if not self._wanted(ev):
                    skipped = ev["seq"]
                    continue
                with self._cond:
                    self._kept.append(ev)
                    self._cond.notify_all()
                    return ev
            return None
        finally:
            if skipped is not None and not self._kept:
                self._journal.set_cursor(self.name, skipped)

    def _failed(self, e: BaseException) -> None:
        """A write failed: close the device, keep the event, go to 'reconnecting'.

        The first failure of an outage is a warning; repeats (a reopen that works but a write that
        still fails, as on a full disk) are rate-limited, and the backoff keeps growing.
        """
        self._close_quietly()
        with self._cond:
            self._errors += 1
            self._attempts += 1
            self._state = "reconnecting"
            first, self._outage = not self._outage, True
            if first:
                self._down_since = time.monotonic()
                self._fail_warn.allow()  # arms the limit: the next warning comes _WARN_EVERY_S later
            kept, errors = len(self._kept) + len(self._queue), self._errors
            self._cond.notify_all()
        if first:
            logger.warning("%s: write failed (%s); keeping %d event(s), reopening with backoff", self.where,
                           cause(e), kept)
        elif self._fail_warn.allow():
            logger.warning("%s: still failing after %.0f s (%d failed write(s), last: %s); %d event(s) kept",
                           self.where, time.monotonic() - self._down_since, errors, cause(e), kept)

    def _reconnect(self) -> bool:
        """Wait the backoff (moving new events into the backlog), then try to reopen; True when open."""
        lo, hi = self.retry_s
        delay = min(hi, lo * 2 ** min(max(self._attempts - 1, 0), 30))
        deadline = time.monotonic() + self._rng.uniform(max(lo, delay / 2), delay)
        warn = 0
        with self._cond:
            while not self._abort.is_set():
                warn += self._spill()
                if self._stop.is_set() and not self._kept and not self._queue:
                    return True  # nothing left to deliver: _next() ends the worker
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, _WAIT_S))
            dropped, kept = self._dropped, len(self._kept)
        if warn:
            logger.warning("%s: backlog full (%d events), dropped the oldest; %d dropped so far", self.where,
                           self.max_pending, dropped)
        if self._abort.is_set():
            return False
        try:
            self._open_device()
        except Exception as e:  # noqa: BLE001 - SinkError or a driver error: still away, try again later
            self._attempts += 1
            logger.debug("%s: reopen attempt failed: %s", self.where, e)
            if self._fail_warn.allow():
                msg = str(e) if isinstance(e, SinkError) else f"{self.where}: {cause(e)}"
                logger.warning("%s; still away after %.0f s, %d event(s) kept", msg,
                               time.monotonic() - self._down_since, kept)
            return False
        with self._cond:
            self._device_open = True
            self._state = "open"
            self._cond.notify_all()
        logger.debug("%s: reopened; %d kept event(s) to send", self.where, kept)
        return True

    def _spill(self) -> int:
        """While away (lock held): move queued events into the backlog, dropping its oldest beyond
        ``max_pending``; returns 1 when a drop warning is due."""
        warn = 0
        while self.max_pending and self._queue:
            self._kept.append(self._queue.popleft())
            if len(self._kept) > self.max_pending:
                self._kept.popleft()
                self._dropped += 1
                warn = warn or int(self._drop_warn.allow())
            self._cond.notify_all()
        return warn

    def _gone(self, e: DeviceGone) -> None:
        """The device is gone for good: drop what is left (counted) and every later event."""
        with self._cond:
            lost = len(self._kept) + len(self._queue)
            self._kept.clear()
            self._queue.clear()
            self._dropped += lost
            self._accepting = False
            self._state = "closed"
            self._cond.notify_all()
        logger.warning("%s: %s; dropping %d pending and all further events", self.where, e, lost)

    def _close_quietly(self) -> None:
        with self._cond:
            was_open, self._device_open = self._device_open, False
        if not was_open:
            return
        try:
            self._close_device()
        except Exception as e:  # noqa: BLE001 - closing a failed device may fail too
            logger.debug("%s: error while closing: %s", self.where, e)
