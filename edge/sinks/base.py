"""The Sink base class: one worker thread per sink that delivers from a feed, so a slow, full or
unplugged sink never stalls inference.

A sink is fed from memory (:class:`edge.sinks.feeds.MemoryFeed`: ``submit()`` only filters and appends
to a bounded queue; when full the oldest is dropped, counted, warned about at most every few seconds)
or, when durable, from the journal (:class:`edge.sinks.feeds.JournalFeed`, after :meth:`Sink.attach_journal`:
it resumes from the sink's cursor after an outage or a restart). The worker delivers in order through
``_write()``; when a write fails it closes the device, keeps the record, reopens with exponential backoff
and jitter ("reconnecting") and resends what it kept, in order. A sink that may be away long (serial) sets
:attr:`Sink.max_pending`: while away, a memory feed moves newer records into that backlog too.
Subclasses implement ``_open_device()``, ``_write(record)`` and ``_close_device()``, and each has its
config model (a :class:`SinkConfigBase`) in its own module.

The worker never dies silently: an exception that escapes its loop (a bug, a record the feed cannot
read) is logged with its traceback, counted (``crashes``), and the worker goes 'reconnecting': it closes
the device, waits the backoff, reopens and goes on from where it was (a journal feed from its last
delivered event, a memory feed with what it holds).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from edge.errors import SinkError
from edge.paths import cause
from edge.schema import NAME, QueueSize, Strict
from edge.sinks.feeds import Feed, JournalFeed, MemoryFeed, Record, wanted_by
from edge.util import Backoff, RateLimit

logger = logging.getLogger(__name__)

_WAIT_S = 0.25        # longest blind wait of the worker (close() also wakes it directly)
_JOIN_S = 1.0         # after close()'s timeout: how long to wait for a worker stuck in a write
_WARN_EVERY_S = 10.0  # repeated warnings (drops, failing writes) at most this often
RETRY_S = (0.5, 30.0)  # default backoff (first, longest) between reopen attempts


class SinkConfigBase(Strict):
    """The keys every sink has; each sink's model adds ``type`` (its tag in the config) and its own keys."""

    name: Annotated[str, Field(pattern=NAME)] | None = Field(None, description="default: the type (and a number)")
    queue_size: QueueSize = Field(1000, description="events waiting for this sink; when full the oldest is "
                                                    "dropped (counted and logged)")
    cameras: list[str] | None = Field(None, description="only these cameras' events (default: all)")
    events: list[Literal["start", "end"]] = Field(["start", "end"], description="which event kinds to send")
    durable: bool | None = Field(None, description="deliver from the journal: after an outage or a restart the sink "
                                                   "resumes where it stopped (default: yes for log, serial and mqtt, "
                                                   "no for stdout, gpio and unix, whose events are only worth it "
                                                   "live)")


def json_line(ev: Record) -> str:
    """The event as one compact JSON line."""
    return json.dumps(ev, separators=(",", ":")) + "\n"


def text_line(ev: Record) -> str:
    """``START swipe_left 0.93 door``: for serial consumers that parse words, not JSON."""
    return f"{str(ev['event']).upper()} {ev['label']} {float(ev['score']):.2f} {ev['camera']}\n"


FORMATTERS: dict[str, Callable[[Record], str]] = {"json": json_line, "text": text_line}


class DeviceGone(Exception):
    """Raised by ``_write`` when the device is gone for good (stdout's reader closed the pipe)."""


class Rewound(Exception):
    """Raised by ``_write`` after it moved the feed back (``feed.rewind``): the record was not written and
    is no error; the worker takes the next record from the feed again (the log sink, when its file was
    deleted: what went to the lost file is written again from the journal)."""


class Sink:
    """One event destination fed by a :class:`~edge.sinks.feeds.Feed`, with its own worker thread.

    ``cfg`` is the sink's config model (``queue_size``, ``cameras``, ``events`` and its own keys);
    ``name`` is the sink's name from :func:`edge.config.sink_names`. A sink is opened once and
    closed once; a config reload makes new sinks. Each subclass names its config model in ``config``.
    """

    type = "?"
    config: ClassVar[type[SinkConfigBase]]
    durable_default = False    # journaled unless the config says otherwise (sinks that must not miss events)
    max_pending = 0            # records kept while the device is away (0: the one that failed)
    retry_s: tuple[float, float] = RETRY_S

    def __init__(self, cfg: Any, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.target = self.type      # subclass: what it writes to, for messages ("port /dev/ttyUSB0")
        self._cond = threading.Condition()  # re-entrant: the feed shares it
        self._wanted = wanted_by(cfg.cameras, cfg.events)
        self._feed: Feed = MemoryFeed(cfg.queue_size, self._wanted, self._cond)
        self._stop = threading.Event()    # close(): deliver what was accepted, then stop
        self._abort = threading.Event()   # close()'s timeout passed: stop now
        self._thread: threading.Thread | None = None
        self._state = "closed"
        self._device_open = False
        self._writing = False
        self._delivered = self._dropped = self._errors = self._crashes = 0
        self._backoff = Backoff(*self.retry_s)
        self._outage = False         # a write failed and none has worked since
        self._down_since = 0.0
        self._drop_warn, self._fail_warn = RateLimit(_WARN_EVERY_S), RateLimit(_WARN_EVERY_S)
        self._crash_warn = RateLimit(_WARN_EVERY_S)

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
        self._backoff = Backoff(*self.retry_s)  # retry_s may have been set after __init__
        away = self._open_at_start()
        with self._cond:
            if away is None:
                self._device_open, self._state = True, "open"
            else:
                self._down()
            self._cond.notify_all()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()
        logger.info("%s open%s", self.where, self._details())
        if away is not None:
            logger.warning("%s", away)

    @property
    def durable(self) -> bool:
        """Delivered from the journal (resumes after an outage or a restart) rather than a memory queue."""
        configured = getattr(self.cfg, "durable", None)
        return self.durable_default if configured is None else bool(configured)

    def attach_journal(self, journal: Any) -> int:
        """Deliver from ``journal`` (an :class:`edge.journal.Journal`), starting after this sink's
        cursor; a sink the journal has not seen starts with the next event. Call before open().
        Returns how many journaled events are waiting for this sink."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError(f"{self.where}: attach_journal() must come before open()")
        feed = JournalFeed(journal, self.name, self._wanted, self._cond)
        self._feed = feed
        if feed.waiting:
            logger.info("%s: %d journaled event(s) not yet delivered; sending them first", self.where, feed.waiting)
        return feed.waiting

    def submit(self, record: Record) -> None:
        """Queue one record (the event schema dict, with ``seq`` and ``v``) for delivery; never blocks.

        Records the filters exclude are ignored. ``seq`` is the journal's: the same event has the same
        ``seq`` in every sink, and a sink's consumer sees a gap where one was dropped. A journal-fed sink
        ignores submit(): its worker reads the journal.
        """
        if self._feed.put(record) and self._drop_warn.allow():
            logger.warning("%s: queue full (%d events), dropped the oldest; %d dropped so far", self.where,
                           self.cfg.queue_size, self._feed.dropped)

    def close(self, timeout: float = 5.0) -> int:
        """Stop accepting, deliver what was accepted for up to ``timeout`` s, stop the worker, close the device.

        Returns how many accepted events were still undelivered (logged when > 0; a journal-fed sink
        delivers them at the next start); events dropped earlier are in ``stats()['dropped']``.
        """
        with self._cond:
            self._feed.stop()
            if self._feed.durable and self._outage:
                timeout = min(timeout, 0.05)  # failing: what it holds stays in the journal, no use waiting
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
            left = self._feed.pending()
            self._state = "closed"
            self._cond.notify_all()
        self._feed.close()
        if left and self._feed.durable:
            logger.info("%s: %d event(s) stay in the journal, delivered at the next start", self.where, left)
        elif left:
            logger.warning("%s: closed with %d event(s) not delivered", self.where, left)
        return left

    def stats(self) -> dict[str, Any]:
        """Counters: delivered, dropped, pending (queued or kept), errors (failed writes), crashes (the
        worker restarted after an exception), state; a sink may add its own (the log sink's reopened)."""
        with self._cond:
            return self._stats()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Wait until ``predicate(stats())`` holds (True) or ``timeout`` s pass (False); for tests and drains."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._stats()), timeout)

    def _stats(self) -> dict[str, Any]:
        return {"delivered": self._delivered, "dropped": self._dropped + self._feed.dropped,
                "pending": self._feed.pending(), "errors": self._errors, "crashes": self._crashes,
                "state": self._state, **self._more_stats()}

    def _more_stats(self) -> dict[str, Any]:
        """(lock held) A subclass's own counters for :meth:`stats`."""
        return {}

    def _count_crash(self, e: BaseException, thread: str, then: str) -> int:
        """Log an exception that escaped one of this sink's threads (``thread``: 'worker', 'socket'...)
        with its traceback (rate-limited), and count it in ``crashes``; ``then``: what happens now.
        Returns the count."""
        with self._cond:
            self._crashes += 1
            n = self._crashes
            self._cond.notify_all()
        if self._crash_warn.allow():
            logger.error("%s: its %s thread crashed (%s: %s); %s (%d crash(es) so far)", self.where, thread,
                         type(e).__name__, e, then, n, exc_info=e)
        else:
            logger.debug("%s: crashed again (%s: %s)", self.where, type(e).__name__, e, exc_info=e)
        return n

    def _closing_cleanly(self) -> bool:
        """close() was called and its timeout has not passed: subclasses may finish what they hold."""
        return self._stop.is_set() and not self._abort.is_set()

    # --- subclass hooks -----------------------------------------------------------------------------
    def _details(self) -> str:
        """Extra words for the 'open' log line, e.g. ' (115200 baud, text)'."""
        return ""

    def _open_at_start(self) -> str | None:
        """The first open, in the caller's thread. A sink that may start without its device returns the
        warning to log (it then starts 'reconnecting') instead of raising. Raises: SinkError."""
        self._open_device()
        return None

    def _open_device(self) -> None:
        """Open (or reopen) the device. Raises: SinkError (one line)."""
        raise NotImplementedError

    def _write(self, record: Record) -> None:
        """Deliver one record, all or raise (OSError, a driver's error, or DeviceGone)."""
        raise NotImplementedError

    def _close_device(self) -> None:
        """Release the device; called once per successful open, from the worker once it runs."""
        raise NotImplementedError

    def _idle(self) -> None:
        """Called by the worker when no record came for a while (about every 0.25 s), device open: a sink
        may look after its device here (the log sink notices a deleted file without waiting for an event)."""

    def _interrupt(self) -> None:
        """Wake a ``_write`` blocked on a stalled device (called by close() after its timeout)."""

    # --- worker -------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                try:
                    self._deliver()
                    return
                except Exception as e:  # noqa: BLE001 - a bug or an unreadable record: logged, counted, restarted
                    self._crashed(e)
        finally:
            self._close_quietly()

    def _deliver(self) -> None:
        """The worker's loop: returns when the feed is finished, the device is gone or close() aborts."""
        while not self._abort.is_set():
            if self._state == "reconnecting" and not self._reconnect():
                continue
            rec = self._feed.next(_WAIT_S)
            if rec is None:
                if self._feed.finished():
                    return
                if self._state == "open":
                    self._idle()
                continue
            err = self._attempt(rec)
            if isinstance(err, Rewound):
                continue
            if isinstance(err, DeviceGone):
                self._gone(err)
                return
            if isinstance(err, OSError):  # serial.SerialException is an OSError too
                self._failed(err)
                continue
            if err is not None:  # a bad record must not stop the sink (nor be retried forever)
                logger.error("%s: cannot write event %r (%s: %s); dropped", self.where, rec,
                             type(err).__name__, err, exc_info=err)
                with self._cond:
                    self._feed.ack(rec)
                    self._dropped, self._errors = self._dropped + 1, self._errors + 1
                    self._cond.notify_all()
                continue
            with self._cond:
                self._feed.ack(rec)
                self._delivered += 1
                self._backoff.reset()
                recovered, self._outage = self._outage, False
                self._cond.notify_all()
            if recovered:
                logger.info("%s: delivering again after %.1f s (%d failed write(s) so far)", self.where,
                            time.monotonic() - self._down_since, self._errors)

    def _crashed(self, e: Exception) -> None:
        """An exception escaped the worker's loop: log it with its traceback, count it, close the device
        and go 'reconnecting', so the loop starts again after the backoff from where the feed was."""
        self._close_quietly()
        with self._cond:
            self._down()
            self._cond.notify_all()
        self._count_crash(e, "worker", "restarting it with backoff from " +
                          ("its last delivered event" if self._feed.durable else "what it holds"))
        try:
            self._feed.restart()
        except Exception as again:  # noqa: BLE001 - the next attempt (after the backoff) tries again
            logger.debug("%s: restarting the feed failed: %s", self.where, again, exc_info=again)

    def _attempt(self, rec: Record) -> Exception | None:
        """One ``_write``; returns its error, if any. ``_writing`` tells close() it may interrupt."""
        with self._cond:
            self._writing = True
        try:
            self._write(rec)
            return None
        except Exception as e:  # noqa: BLE001 - sorted by the caller
            return e
        finally:
            with self._cond:
                self._writing = False

    def _down(self) -> bool:
        """(lock held) The device is away: 'reconnecting'. True when this starts an outage."""
        self._device_open, self._state = False, "reconnecting"
        first, self._outage = not self._outage, True
        if first:
            self._down_since = time.monotonic()
            self._fail_warn.allow()  # arms the limit: the next warning comes _WARN_EVERY_S later
        return first

    def _failed(self, e: BaseException) -> None:
        """A write failed: close the device, keep the record, go to 'reconnecting'.

        The first failure of an outage is a warning; repeats (a reopen that works but a write that
        still fails, as on a full disk) are rate-limited, and the backoff keeps growing.
        """
        self._close_quietly()
        with self._cond:
            self._errors += 1
            first = self._down()
            kept, errors = self._feed.pending(), self._errors
            self._cond.notify_all()
        if first:
            logger.warning("%s: write failed (%s); keeping %d event(s), reopening with backoff", self.where,
                           cause(e), kept)
        elif self._fail_warn.allow():
            logger.warning("%s: still failing after %.0f s (%d failed write(s), last: %s); %d event(s) kept",
                           self.where, time.monotonic() - self._down_since, errors, cause(e), kept)

    def _reconnect(self) -> bool:
        """Wait the backoff (a memory feed moves new records into the backlog), then try to reopen; True
        when open, or when closing with nothing left to deliver."""
        deadline = time.monotonic() + self._backoff.next()
        dropped = 0
        with self._cond:
            while not self._abort.is_set():
                dropped += self._feed.away(self.max_pending)
                if self._stop.is_set() and self._feed.pending() == 0:
                    return True  # nothing left to deliver: the feed is finished, the worker ends
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, _WAIT_S))
            kept = self._feed.pending()
        if dropped and self._drop_warn.allow():
            logger.warning("%s: backlog full (%d events), dropped the oldest; %d dropped so far", self.where,
                           self.max_pending, self._feed.dropped)
        if self._abort.is_set():
            return False
        try:
            self._open_device()
        except Exception as e:  # noqa: BLE001 - SinkError or a driver error: still away, try again later
            logger.debug("%s: reopen attempt failed: %s", self.where, e)
            if self._fail_warn.allow():
                msg = str(e) if isinstance(e, SinkError) else f"{self.where}: {cause(e)}"
                logger.warning("%s; still away after %.0f s, %d event(s) kept", msg,
                               time.monotonic() - self._down_since, kept)
            return False
        with self._cond:
            self._device_open, self._state = True, "open"
            self._cond.notify_all()
        logger.debug("%s: reopened; %d kept event(s) to send", self.where, kept)
        return True

    def _gone(self, e: DeviceGone) -> None:
        """The device is gone for good: a memory feed drops what it holds (counted) and every later
        record; a journal feed leaves them in the journal."""
        with self._cond:
            lost = self._feed.abandon()
            self._state = "closed"
            self._cond.notify_all()
        if self._feed.durable:
            logger.warning("%s: %s; stopped, undelivered events stay in the journal", self.where, e)
        else:
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
