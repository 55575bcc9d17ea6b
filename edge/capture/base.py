"""The Camera runner that reads one source in its own thread (Frame, Source and FrameSignal live in
:mod:`edge.capture.source` and are importable from here too).

The :class:`Camera` owns the policy around a source: which frames reach the model (every k-th, so
the model sees its trained rate), latest-frame handoff for live sources (the model never lags behind
the camera), lossless handoff for files, pacing of realtime files, looping, reconnecting with backoff,
and waiting for a device that is not there yet at start (``at_start: retry``) on the same path.
"""
from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.capture.source import DEFAULT_FPS, Frame, FrameSignal, Source, absent
from edge.config import CameraConfig
from edge.errors import CaptureError, EdgeError
from edge.util import Backoff

__all__ = ["DEFAULT_FPS", "Camera", "Frame", "FrameSignal", "Source", "absent"]

logger = logging.getLogger(__name__)

_QUEUE = 2            # non-live handoff: frames the thread may hold ahead of the consumer
_WAIT_S = 0.25        # longest blind wait in any loop (the stop flag is also signalled directly)
_JOIN_S = 1.0         # how long stop() waits for the thread
_FPS_WINDOW = 32      # reads in the measured-rate window


class Camera:
    """Runs one Source in a thread and hands frames to one consumer (the classifier).

    ``rate_hz`` is the model's decision rate: every k-th frame is passed on,
    k = max(1, round(source.fps / rate_hz)); None passes every frame. Single use: after stop(), make a
    new Camera. ``error`` holds an unexpected exception that ended the thread (a bug, logged with its
    traceback; the state is then "stopped" and get() returns None). A device that is not there when the
    camera is opened can be waited for (:meth:`open_or_wait`): the state is "waiting" until the capture
    thread has opened it, with the reconnect backoff.
    """

    def __init__(self, cfg: CameraConfig, rate_hz: float | None, source: Source | None = None, *,
                 signal: FrameSignal | None = None, clock_start: float | None = None) -> None:
        if source is None:
            from edge.capture import create_source
            source = create_source(cfg)
        self.cfg = cfg
        self.name = cfg.name
        self.source = source
        self.rate_hz = rate_hz
        self.step = 1
        self.error: BaseException | None = None
        # Called in the capture thread with every frame read (before the every-k-th choice), its capture
        # time on the classifier's clock, its gap flag and its index (frames read since open; for a file
        # that does not loop, its frame number): the field-clip recorder's feed.
        self.tap: Callable[[np.ndarray, float, bool, int], None] | None = None
        # Called in the capture thread on each frame passed to the model: its preprocessing, so it runs in
        # parallel with the inference loop instead of inside it (Frame.input). At most _QUEUE + 2 results
        # are alive at once (queued, being stepped, being prepared): a ring of that many buffers suffices.
        self.prepare: Callable[[np.ndarray], np.ndarray] | None = None
        self.signal = signal            # notified with every frame handed over and at the end
        self.clock_start = clock_start  # non-live files: the time of frame 0 (default: the time of open())
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._buf: collections.deque[Frame] = collections.deque()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._state = "stopped"
        self._opened = self._eof = self._done = False
        self._down = False
        self._waiting = False           # not there at open: the capture thread opens it (first open)
        self._down_since = 0.0
        self._t0 = 0.0
        self._since_gap = 0
        self._gap_pending = True
        self._pace_t0 = 0.0
        self._paced_n = 0
        self._last_frame = 0.0
        self._times: collections.deque[float] = collections.deque(maxlen=_FPS_WINDOW)
        self._read = self._passed = self._skipped = self._reconnects = 0

    # --- consumer side ------------------------------------------------------------------------------
    def open(self) -> None:
        """First open, in the caller's thread, so a bad device fails at start with one line.

        Raises:
            CaptureError, InputError: from the source.
        """
        self.source.open()
        self._opened = True
        self._t0 = time.time() if self.clock_start is None else self.clock_start
        self._mark_open()
        logger.info("camera %s: %s source %s, %.3g fps, every %d frame(s) to the model%s", self.name,
                    self.source.kind, self.source.label, self.source.fps, self.step,
                    "" if self.source.live else " (lossless)")

    def open_or_wait(self, why: str | None = None) -> str | None:
        """Open as :meth:`open` does; when that fails because the device is not there (a file or device node
        that does not exist, a stream not reachable) and the camera's ``at_start`` is retry, or for any
        failure when ``why`` is given (a reload hands devices over and never fails on one), wait for it
        instead: state "waiting", and start() runs the capture thread, which opens it with backoff.

        Returns the warning to log (one line: the open error, that it is waited for and why), None when open.

        Raises:
            CaptureError, InputError: from the source, when the camera does not wait (``at_start: require``,
                or a fault that waiting cannot mend: a path through a file, no permission, not a video).
        """
        try:
            self.open()
            return None
        except EdgeError as e:
            if why is None and (self.cfg.at_start != "retry" or not self.source.away()):
                raise
            self.source.close()
            with self._cond:
                self._waiting = self._down = True
                self._down_since = time.monotonic()
                self._state = "waiting"
            rc = self.cfg.reconnect
            return (f"{e}; waiting for it ({why or 'at_start: retry'}), opening it with backoff "
                    f"{rc.initial_s:.3g}..{rc.max_s:.3g} s while the rest runs")

    def start(self) -> None:
        """Start the capture thread (opens first if neither open() nor open_or_wait() was called)."""
        if self._thread is not None:
            return
        if not self._opened and not self._waiting:
            self.open()
        with self._cond:  # time spent between open() and start() (loading a model) is no stall
            self._pace_t0, self._paced_n = time.monotonic(), 0
            self._last_frame = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def get(self, timeout: float) -> Frame | None:
        """The next frame for the classifier; None on timeout or once the source has ended."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf or self._done, timeout) or not self._buf:
                return None
            frame = self._buf.popleft()
            self._cond.notify_all()
            return frame

    def stop(self) -> None:
        """Stop the thread and release the source; returns within about a second."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_JOIN_S)
            if thread.is_alive():  # stuck in a driver read; it closes the source when that returns
                logger.warning("camera %s: capture thread still blocked in a read after %.1f s; left behind",
                               self.name, _JOIN_S)
        else:
            self.source.close()
        with self._cond:
            self._state = "stopped"
            self._done = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """A non-looping file reached its end and the consumer took every frame."""
        with self._cond:
            return self._eof and not self._buf

    @property
    def state(self) -> str:
        """online, stalled (no frame for stall_s), reconnecting, waiting (not there yet at start), ended or
        stopped."""
        state = self._state
        if state == "online" and self._thread is not None and self.source.live \
                and time.monotonic() - self._last_frame > self.cfg.stall_s:
            return "stalled"
        return state

    def stats(self) -> dict:
        """Counters for status lines and tests."""
        with self._cond:
            times = list(self._times)
            out = {"state": self.state, "frames_read": self._read, "frames_passed": self._passed,
                   "skipped": self._skipped, "reconnects": self._reconnects,
                   "decode_scale": getattr(self.source, "scale", 1)}  # MJPG decoded at 1/N (decode_scale)
        fresh = len(times) >= 2 and time.monotonic() - times[-1] <= self.cfg.stall_s
        out["fps"] = round((len(times) - 1) / (times[-1] - times[0]), 2) if fresh and times[-1] > times[0] else 0.0
        return out

    # --- capture thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # a bug, not a capture fault: say so loudly, end the stream
            self.error = e
            logger.exception("camera %s: capture thread failed", self.name)
        finally:
            self.source.close()
            with self._cond:
                if self._state != "ended":
                    self._state = "stopped"
                self._done = True
                self._cond.notify_all()
            if self.signal is not None:
                self.signal.notify()

    def _loop(self) -> None:
        src = self.source
        while not self._stop.is_set():
            if self._down and not self._reconnect():
                return
            if src.paced and not self._pace():
                return
            try:
                if self._skippable():
                    if src.skip():
                        self._count_skipped_read()
                        continue
                    img = None
                else:
                    img = src.read()
            except CaptureError as e:
                self._fault(str(e))
                continue
            if img is not None:
                self._deliver(img)
            elif self.cfg.loop and self._since_gap > 0:
                self._wrap()
            else:
                self._finish()
                return

    def _deliver(self, img: np.ndarray) -> None:
        now = time.monotonic()
        with self._cond:
            if self.source.live and now - self._last_frame > self.cfg.stall_s:
                logger.warning("camera %s: no frame for %.1f s, frames again", self.name, now - self._last_frame)
                self._gap_pending, self._since_gap = True, 0
            index = self._read
            self._read += 1
            self._times.append(now)
            self._last_frame = now
            take = self._since_gap % self.step == 0
            first = self._since_gap == 0 or self._gap_pending
            self._since_gap += 1
            ts = time.time() if self.source.live else self._t0 + index / self.source.fps
        if self.tap is not None:
            try:
                self.tap(img, ts, first, index)
            except Exception:  # noqa: BLE001 - a recorder fault must not stop the classifier's frames
                logger.exception("camera %s: frame tap failed; switched off", self.name)
                self.tap = None
        if not take:
            return
        prepared = None
        if self.prepare is not None:
            try:
                prepared = self.prepare(img)
            except EdgeError as e:  # the inference loop preprocesses it again and reports it there
                logger.debug("camera %s: preprocessing in the capture thread failed: %s", self.name, e)
        with self._cond:
            gap, self._gap_pending = self._gap_pending, False
            if self.source.live:
                frame = Frame(img, index, ts, gap, prepared)
                if self._buf:  # the consumer has not taken the previous one: overwrite, never queue
                    frame.gap |= self._buf.popleft().gap
                    self._skipped += 1
            else:
                frame = Frame(img, index, ts, gap, prepared)
                while len(self._buf) >= _QUEUE:
                    if self._stop.is_set():
                        return
                    self._cond.wait(_WAIT_S)
            self._buf.append(frame)
            self._passed += 1
            self._cond.notify_all()
        if self.signal is not None:
            self.signal.notify()

    def _skippable(self) -> bool:
        """The next frame is neither passed to the model nor wanted by a tap: it need not be decoded.

        Live sources never skip right after a silence, so stall detection sees a decoded frame first.
        """
        with self._cond:
            if self.tap is not None or self.step == 1 or self._gap_pending:
                return False
            if self.source.live and time.monotonic() - self._last_frame > self.cfg.stall_s:
                return False
            return self._since_gap % self.step != 0

    def _count_skipped_read(self) -> None:
        """Bookkeeping of a frame read but not decoded (it counts as read, as in _deliver)."""
        now = time.monotonic()
        with self._cond:
            self._read += 1
            self._times.append(now)
            self._last_frame = now
            self._since_gap += 1

    def _pace(self) -> bool:
        """Wait until the next frame is due at the source's fps; False when stopped."""
        due = self._pace_t0 + self._paced_n / self.source.fps
        self._paced_n += 1
        delay = due - time.monotonic()
        if delay > 0:
            return not self._stop.wait(delay)
        if delay < -1.0:  # fell behind (slow decode): carry on from now rather than burst
            self._pace_t0, self._paced_n = time.monotonic(), 1
        return True

    def _wrap(self) -> None:
        """loop: true: start the file again; the next frame carries gap=True."""
        self.source.close()
        try:
            self.source.open()
        except EdgeError as e:
            self._fault(f"{e} (reopening to loop)")
            return
        self._mark_open()

    def _finish(self) -> None:
        logger.info("camera %s: end of %s after %d frames", self.name, self.source.label, self._read)
        with self._cond:
            self._eof = True
            self._state = "ended"
            self._cond.notify_all()
        if self.signal is not None:
            self.signal.notify()

    def _fault(self, why: str) -> None:
        self._state = "stalled"
        self._down, self._down_since = True, time.monotonic()
        logger.warning("%s; reconnecting (backoff %.3g..%.3g s)", why, self.cfg.reconnect.initial_s,
                       self.cfg.reconnect.max_s)

    def _reconnect(self) -> bool:
        """Reopen (or open a device waited for) with exponential backoff and jitter until it works; False
        when stopped."""
        self._state = "waiting" if self._waiting else "reconnecting"
        self.source.close()
        rc = self.cfg.reconnect
        backoff = Backoff(rc.initial_s, rc.max_s, low=0.75, rng=self._rng)
        attempt = 0
        while True:
            if self._stop.wait(backoff.next()):
                return False
            attempt += 1
            try:
                self.source.open()
            except EdgeError as e:
                logger.debug("camera %s: reconnect attempt %d failed: %s", self.name, attempt, e)
                self.source.close()
                continue
            self._down = False
            if self._waiting:  # the first open: the device appeared
                self._waiting, self._opened = False, True
                self._t0 = time.time() if self.clock_start is None else self.clock_start
                self._mark_open()
                logger.warning("camera %s: %s is there now (after %.1f s, %d attempt(s)); %s source, %.3g fps",
                               self.name, self.source.label, time.monotonic() - self._down_since, attempt,
                               self.source.kind, self.source.fps)
                return True
            self._reconnects += 1
            self._mark_open()
            logger.warning("camera %s: reconnected after %d attempt(s), %.1f s without frames", self.name,
                           attempt, time.monotonic() - self._down_since)
            return True

    def _mark_open(self) -> None:
        """After an open: frame rate known, next frame passed with gap=True, pacing restarts."""
        with self._cond:
            self.step = max(1, round(self.source.fps / self.rate_hz)) if self.rate_hz else 1
            self._gap_pending, self._since_gap = True, 0
            self._pace_t0, self._paced_n = time.monotonic(), 0
            self._last_frame = time.monotonic()
            self._state = "online"
