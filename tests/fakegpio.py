"""Fake GPIO hardware for the tests (no GPIO chip exists on the build machines).

- :class:`FakeLines` / :class:`FakeDriver`: the sink's own interface (``GpioLines``), put into
  ``edge.sinks.gpio.DRIVERS``; they record every line change with its time.
- :class:`FakeChip`: stands in for ``gpiod.Chip`` only (get_info, request_lines, get_line_info, close),
  so the real gpiod adapter code runs with the real ``gpiod`` settings and values.
- :func:`fake_jetson_gpio`: a ``Jetson.GPIO``-like module (RPi.GPIO-style calls), recording them.
"""
from __future__ import annotations

import errno
import threading
import time
import types
from collections.abc import Callable
from typing import Any


class FakeLines:
    """Requested output lines: ``state`` per line, ``log`` of (time, line, active) and ("close",)."""

    def __init__(self, lines: list[int]) -> None:
        self.cond = threading.Condition()
        self.state = {line: False for line in lines}
        self.log: list[tuple[Any, ...]] = []
        self.closed = False
        self.fail: OSError | None = None  # raised by every set() while not None

    def set(self, line: int, active: bool) -> None:
        with self.cond:
            if self.closed:
                raise OSError(errno.EBADF, "lines released")
            if self.fail is not None:
                raise self.fail
            if line not in self.state:
                raise OSError(errno.EINVAL, f"line {line} not requested")
            self.state[line] = active
            self.log.append((time.monotonic(), line, active))
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.log.append(("close",))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[FakeLines], bool], timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)

    def changes(self) -> list[tuple[Any, ...]]:
        """The log without times: (line, active) and ("close",)."""
        with self.cond:
            return [e if e == ("close",) else e[1:] for e in self.log]


class FakeDriver:
    """An opener for ``DRIVERS``: each open makes new :class:`FakeLines`; ``fail_next`` fails opens."""

    def __init__(self) -> None:
        self.made: list[FakeLines] = []
        self.fail_next: list[Exception] = []

    def __call__(self, cfg: Any, where: str) -> FakeLines:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.made.append(FakeLines(sorted(set(cfg.lines.values()))))
        return self.made[-1]


# --- gpiod.Chip stand-in --------------------------------------------------------------------------
class FakeRequest:
    def __init__(self, chip: FakeChip, offsets: list[int]) -> None:
        self.chip, self.offsets, self.released = chip, offsets, False

    def set_value(self, line: int, value: Any) -> None:
        import gpiod
        if self.released:
            raise gpiod.RequestReleasedError()
        self.chip.calls.append(("set_value", line, value))

    def release(self) -> None:
        self.released = True
        self.chip.calls.append(("release",))


class FakeChip:
    """A gpiod.Chip with ``num_lines`` lines; ``busy`` maps a line to the consumer holding it."""

    def __init__(self, num_lines: int = 32, busy: dict[int, str] | None = None,
                 open_error: OSError | None = None) -> None:
        self.num_lines, self.busy, self.open_error = num_lines, busy or {}, open_error
        self.calls: list[tuple[Any, ...]] = []
        self.path = ""

    def __call__(self, path: str) -> FakeChip:  # used as the chip factory: FakeChip()(path)
        if self.open_error is not None:
            raise self.open_error
        self.path = path
        self.calls.append(("open", path))
        return self

    def get_info(self) -> Any:
        import gpiod
        return gpiod.ChipInfo(name="gpiochip0", label="fake-gpio", num_lines=self.num_lines)

    def request_lines(self, config: dict, consumer: str | None = None) -> FakeRequest:
        (offsets, settings), = config.items()
        self.calls.append(("request_lines", tuple(offsets), settings, consumer))
        if any(o in self.busy for o in offsets):
            raise OSError(errno.EBUSY, "Device or resource busy")
        return FakeRequest(self, list(offsets))

    def get_line_info(self, line: int) -> Any:
        return types.SimpleNamespace(used=line in self.busy, consumer=self.busy.get(line, ""))

    def close(self) -> None:
        self.calls.append(("close",))


# --- Jetson.GPIO stand-in -------------------------------------------------------------------------
def fake_jetson_gpio(pins: set[int]) -> types.ModuleType:
    """A module with Jetson.GPIO's calls; only ``pins`` can be set up; ``calls`` records them all."""
    m = types.ModuleType("Jetson.GPIO")
    m.BOARD, m.BCM, m.OUT, m.HIGH, m.LOW = 10, 11, 0, 1, 0
    m.calls = []
    m.mode = None

    def setmode(mode: int) -> None:
        m.mode = mode
        m.calls.append(("setmode", mode))

    def setup(pin: int, direction: int, initial: int) -> None:
        if pin not in pins:
            raise ValueError(f"Channel {pin} is invalid")
        m.calls.append(("setup", pin, direction, initial))

    m.getmode = lambda: m.mode
    m.setwarnings = lambda flag: None
    m.setmode, m.setup = setmode, setup
    m.output = lambda pin, value: m.calls.append(("output", pin, value))
    m.cleanup = lambda channels=None: m.calls.append(("cleanup", channels))
    return m
