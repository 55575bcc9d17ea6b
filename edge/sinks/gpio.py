"""GPIO sink: a pulse or a level on an output line per label, to trigger a relay, a PLC input or an LED.

``mode: pulse``: each ``start`` makes the label's line active for ``pulse_ms``; a start during a pulse
restarts it. ``mode: level``: the line is active from a ``start`` to its ``end`` (while any camera has
that label, or another label on the same line, going on). Events of labels without a line are
delivered as done. The lines are requested once at open (outputs, inactive) and released at close,
after every line is set inactive; a pulse in progress at close is let finish first.

Pulses end on a small timer thread that waits for the earliest deadline, so a pulse on one line
never delays an event on another. Which lines should be active is worked out by :class:`LinePlan`,
pure and given the time, so its rules are tested step by step; the hardware is behind
:class:`edge.sinks.gpio_lines.GpioLines` (libgpiod v2 or Jetson.GPIO, see :data:`DRIVERS`).
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edge.schema import ReconnectConfig
from edge.sinks.base import Sink, SinkConfigBase
from edge.sinks.gpio_lines import GpioLines, chip_path, detect_driver, open_gpiod, open_jetson

logger = logging.getLogger(__name__)


class GpioSinkConfig(SinkConfigBase):
    type: Literal["gpio"] = Field(description="a pulse or a level on a GPIO output line per label")
    chip: str = Field("/dev/gpiochip0", max_length=255, description="gpiod driver: the GPIO chip device (a bare "
                                                                    "name such as 'gpiochip0' means /dev/gpiochip0); "
                                                                    "ignored by the jetson driver")
    lines: Annotated[dict[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=0, le=65535)]],
                     Field(min_length=1, description="label -> line: the chip's line offset (gpiod) or the pin "
                                                     "number in `numbering` (jetson); labels may share a line")]
    mode: Literal["pulse", "level"] = Field("pulse", description="pulse: active for pulse_ms at each start (a start "
                                                                 "during a pulse restarts it); level: active from "
                                                                 "start to end")
    pulse_ms: Annotated[int, Field(ge=1, le=10_000)] = Field(100, description="pulse length in milliseconds")
    active_low: bool = Field(False, description="active means a low level on the pin")
    driver: Literal["auto", "gpiod", "jetson"] = Field("auto", description="auto: jetson (Jetson.GPIO) on an NVIDIA "
                                                                           "Jetson, else gpiod (libgpiod v2)")
    numbering: Literal["board", "bcm"] = Field("board", description="jetson driver: pin numbers of the 40-pin "
                                                                    "header (board) or Broadcom-style (bcm)")
    reconnect: ReconnectConfig = Field(ReconnectConfig(), description="backoff for requesting the lines again "
                                                                      "after a failed write (a USB GPIO bridge "
                                                                      "unplugged)")

    @model_validator(mode="after")
    def _level_needs_end(self) -> GpioSinkConfig:
        if self.mode == "level" and "end" not in self.events:
            raise ValueError("mode 'level' needs 'end' in events (else a line would never go inactive)")
        return self


LinesOpener = Callable[[GpioSinkConfig, str], GpioLines]
# driver name -> opener(cfg, where); looked up at each open, so tests can put a fake chip here
DRIVERS: dict[str, LinesOpener] = {"gpiod": open_gpiod, "jetson": open_jetson}

_TIMER_WAIT_S = 1.0   # longest blind wait of the pulse timer (it is woken on every change)
_CLOSE_POLL_S = 0.05  # close(): how often the wait for a pulse in progress looks at the abort flag


class LinePlan:
    """Which lines are active, from events and the time; pure (``now`` is given), no I/O.

    ``event()`` and ``expire()`` return the changes to make on the hardware, nothing else.
    """

    def __init__(self, mode: str, pulse_s: float) -> None:
        self.mode, self.pulse_s = mode, pulse_s
        self._until: dict[int, float] = {}                 # pulse: line -> when it goes inactive
        self._held: dict[int, set[tuple[str, str]]] = {}  # level: line -> (camera, label) going on

    def event(self, line: int, kind: str, key: tuple[str, str], now: float) -> bool | None:
        """Apply one event on ``line``; the line's new state if it changes, else None."""
        if self.mode == "pulse":
            if kind != "start":
                return None
            was = line in self._until
            self._until[line] = now + self.pulse_s   # a start during a pulse restarts it
            return None if was else True
        holders = self._held.setdefault(line, set())
        if kind == "start":
            was = bool(holders)
            holders.add(key)   # a start whose end was lost is taken over by the next end of that key
            return None if was else True
        if key not in holders:
            return None
        holders.discard(key)
        return None if holders else False

    def expire(self, now: float) -> list[int]:
        """Lines whose pulse is over at ``now`` (they are inactive from here on), in line order."""
        over = sorted(line for line, t in self._until.items() if t <= now)
        for line in over:
            del self._until[line]
        return over

    def next_due(self) -> float | None:
        """When the next pulse ends (None: no pulse going on)."""
        return min(self._until.values(), default=None)

    def active(self) -> list[int]:
        """The lines that should be active now."""
        return sorted(set(self._until) | {line for line, h in self._held.items() if h})

    def clear(self) -> None:
        """All lines inactive (after the lines were (re)opened)."""
        self._until.clear()
        self._held.clear()


class GpioSink(Sink):
    """Events as pulses or levels on GPIO output lines."""

    type = "gpio"
    config = GpioSinkConfig

    def __init__(self, cfg: GpioSinkConfig, name: str) -> None:
        super().__init__(cfg, name)
        self.driver = detect_driver() if cfg.driver == "auto" else cfg.driver
        self.target = f"chip {chip_path(cfg.chip)}" if self.driver == "gpiod" else \
            f"Jetson pins ({cfg.numbering} numbering)"
        self.retry_s = (cfg.reconnect.initial_s, cfg.reconnect.max_s)
        self._line_of = dict(cfg.lines)
        self._all_lines = sorted(set(cfg.lines.values()))
        self._plan = LinePlan(cfg.mode, cfg.pulse_ms / 1000.0)
        self._hw = threading.Condition()  # guards _lines, _plan, the timer flags; the timer waits on it
        self._lines: GpioLines | None = None
        self._timer: threading.Thread | None = None
        self._timer_stop = False
        self._timer_error: OSError | None = None

    def _details(self) -> str:
        c = self.cfg
        how = f"pulse {c.pulse_ms} ms" if c.mode == "pulse" else "level"
        lines = ", ".join(f"{label}={n}" for label, n in c.lines.items())
        return f" ({self.driver}, {how}{', active low' if c.active_low else ''}; {lines})"

    def _open_device(self) -> None:
        """Request the lines (outputs, inactive) and start the pulse timer.

        Raises:
            SinkError: the driver's package, the chip, a line or the permission is missing (one line).
        """
        lines = DRIVERS[self.driver](self.cfg, self.where)
        with self._hw:
            self._lines = lines
            self._plan.clear()
            self._timer_stop, self._timer_error = False, None
        if self.cfg.mode == "pulse":
            self._timer = threading.Thread(target=self._pulse_timer, name=f"sink-{self.name}-pulse", daemon=True)
            self._timer.start()

    def _write(self, event: dict[str, Any]) -> None:
        label = event.get("label")
        line = self._line_of.get(label) if isinstance(label, str) else None
        if line is None:
            return  # no line for this label: nothing to drive, counted as delivered
        with self._hw:
            if self._timer_error is not None:  # the timer could not end a pulse: reopen the lines
                err, self._timer_error = self._timer_error, None
                raise err
            if self._lines is None:
                raise OSError(errno.EBADF, "lines not requested")
            change = self._plan.event(line, str(event.get("event")), (str(event.get("camera")), label),
                                      time.monotonic())
            if change is not None:
                self._lines.set(line, change)
            self._hw.notify_all()

    def _pulse_timer(self) -> None:
        """Ends pulses at their deadlines; one thread for all lines. An exception that escapes (a bug) is
        logged and counted, and the next event reopens the lines (which starts a new timer)."""
        try:
            self._end_pulses()
        except Exception as e:  # noqa: BLE001 - never die silently: a pulse would stay on
            with self._hw:
                self._timer_error = OSError(errno.EIO, f"pulse timer crashed ({type(e).__name__}: {e})")
                self._hw.notify_all()
            self._count_crash(e, "pulse timer", "the next event reopens the lines")

    def _end_pulses(self) -> None:
        with self._hw:
            while not self._timer_stop and self._lines is not None:
                due, now = self._plan.next_due(), time.monotonic()
                if due is None or due > now:
                    self._hw.wait(_TIMER_WAIT_S if due is None else min(due - now, _TIMER_WAIT_S))
                    continue
                for line in self._plan.expire(now):
                    try:
                        self._lines.set(line, False)
                    except OSError as e:
                        if self._timer_error is None:
                            logger.warning("%s: cannot end the pulse on line %d (%s)", self.where, line, e)
                        self._timer_error = e
                self._hw.notify_all()  # close() may be waiting for the pulse to end

    def _close_device(self) -> None:
        """Let a pulse in progress finish (when closing, not after a failure), set every line
        inactive, release the lines."""
        with self._hw:
            while self._closing_cleanly() and self._plan.next_due() is not None \
                    and self._timer_error is None and self._timer is not None and self._timer.is_alive():
                self._hw.wait(_CLOSE_POLL_S)
            self._timer_stop = True
            self._hw.notify_all()
            lines, self._lines = self._lines, None
            self._plan.clear()
        timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.join(_TIMER_WAIT_S)
        if lines is None:
            return
        try:
            for line in self._all_lines:
                try:
                    lines.set(line, False)
                except OSError as e:
                    logger.warning("%s: cannot set line %d inactive at close (%s)", self.where, line, e)
        finally:
            lines.close()
