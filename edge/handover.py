"""Devices between two pipelines: what a reload checks before it swaps, and sinks it opens late.

A reload (:class:`edge.daemon.Reloader`) builds the next pipeline while the running one serves. Devices
that can be open twice are tried for real then (a log file is opened for appending and closed, a video
file is opened and its first frame decoded, a Unix socket path nobody holds is bound and removed);
devices the running pipeline holds (a V4L2 camera, a serial port, a Unix socket path) cannot be, so
only what can be seen without opening them is checked (a serial port must be a character device). A
fault that waiting cannot mend (a log path through a regular file, a video that does not decode) refuses
the reload; a device that is only away (no such file or device node, a stream not reachable) does not:
it is a waiting device in the new pipeline.

At the swap the running pipeline closes its devices and the new one opens its own ("handover"). A sink
that cannot be opened at that moment (an MQTT broker down, a serial port with ``at_start: require``
unplugged just then) is opened in the background by :class:`LateSinks`, so the swap never fails.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from edge.capture import create_source
from edge.config import normalise_camera_source
from edge.errors import EdgeError
from edge.journal import ensure_writable
from edge.sinks import Sink, create_sink
from edge.util import Backoff

logger = logging.getLogger(__name__)

_JOIN_S = 5.0   # stop(): how long to wait for a sink's open in progress (an MQTT connect has a timeout)


def probe(new: Any, running: Any | None) -> None:
    """Check a prepared (not opened) pipeline's devices as far as can be done without taking those that
    ``running`` (the pipeline serving now) holds.

    Raises:
        EdgeError: the first device that cannot work (one line naming it): the reload is refused.
    """
    held = {(k.type, str(getattr(k.cfg, "path", ""))) for k in (running.sinks if running is not None else ())}
    for sink in new.sinks:
        if sink.type == "serial":
            sink.probe()
        elif sink.type == "log" or (sink.type == "unix" and ("unix", str(sink.cfg.path)) not in held):
            _trial_open(sink)
    for s in new.streams:
        if normalise_camera_source(s.camera.cfg)[0] == "file":
            _trial_source(s.camera.cfg)
    if new.spool is not None:
        ensure_writable(new.spool.folder, "clips.dir")


def _trial_open(sink: Sink) -> None:
    """Open and close a copy of ``sink`` (named ``<name> (reload check)`` in what it logs; fed nothing): a
    log file is fine open twice, a socket path nobody holds is bound and removed again."""
    trial = create_sink(sink.cfg, f"{sink.name} (reload check)")
    trial.open()
    trial.close(timeout=1.0)


def _trial_source(cfg: Any) -> None:
    """Open a file camera's file (decoding its first frame) and close it; a file that is not there is fine."""
    src = create_source(cfg)
    try:
        src.open()
    except EdgeError:
        if not src.away():
            raise
    finally:
        src.close()


class LateSinks:
    """Sinks whose device could not be opened when a reload handed it over, opened again by one thread
    with backoff until they open or the pipeline closes. Meanwhile a memory-fed sink queues what comes
    (bounded, as always) and a journal-fed one's events wait in the journal; status shows them 'waiting'."""

    def __init__(self, retry_s: tuple[float, float] = (0.5, 30.0)) -> None:
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._backoff = Backoff(*retry_s)
        self._thread: threading.Thread | None = None

    def add(self, sink: Sink, err: EdgeError) -> None:
        """Open ``sink`` in the background; ``err`` is why it did not open now (logged, one line)."""
        logger.warning("%s; opening it again with backoff while the rest runs (handed over at a reload)", err)
        with self._lock:
            self._sinks.append(sink)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="late-sinks", daemon=True)
                self._thread.start()

    def names(self) -> set[str]:
        """The sinks still waited for."""
        with self._lock:
            return {s.name for s in self._sinks}

    def stop(self) -> None:
        """No more attempts; waits for one in progress (up to a few seconds)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(_JOIN_S)

    def _run(self) -> None:
        while not self._stop.wait(self._backoff.next()):
            with self._lock:
                todo = list(self._sinks)
            for sink in todo:
                if self._stop.is_set():
                    return
                try:
                    sink.open()
                except EdgeError as e:
                    logger.debug("%s: still cannot open: %s", sink.where, e)
                    continue
                except Exception:  # noqa: BLE001 - a bug in one sink's open must not end the others' attempts
                    logger.exception("%s: open failed", sink.where)
                    continue
                logger.warning("%s: open now, after the reload", sink.where)
                with self._lock:
                    self._sinks.remove(sink)
            with self._lock:
                if not self._sinks:
                    self._thread = None
                    return
