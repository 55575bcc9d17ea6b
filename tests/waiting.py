"""Waiting in tests: poll a condition until it holds, never sleep and then assert.

``wait_until(pred)`` returns the predicate's first truthy value, or raises AssertionError naming what
was awaited and the last value seen. With ``proc=`` it also fails as soon as a watched subprocess has
exited (a daemon that died is reported at once with the tail of its stderr, not after the timeout).
``Follow`` reads a subprocess's pipe in a thread, so a test can wait on what the process printed
without a blocking ``readline`` that would ignore the timeout.
"""
from __future__ import annotations

import inspect
import io
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _describe(pred: Callable[[], Any]) -> str:
    """The predicate's source line (a lambda reads as the condition itself), else its repr."""
    try:
        return " ".join(inspect.getsource(pred).split())[:200]
    except (OSError, TypeError):
        return repr(pred)


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def wait_until(pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str | None = None,
               proc: subprocess.Popen | None = None, output: Callable[[], str] | None = None) -> T:
    """Call ``pred()`` every ``interval`` s until it returns something truthy, and return that.

    Raises AssertionError after ``timeout`` s (naming ``what``, or the predicate's source, and the last
    value), or as soon as ``proc`` has exited without the condition holding (with its exit code and the
    last 2000 characters of ``output()``, or of its stderr pipe when no ``output`` is given).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = pred()  # what the process did just before it exited still counts
            if value:
                return value
            if output is not None:
                tail = output()
            else:
                tail = proc.communicate()[1] if proc.stderr is not None else ""
            if isinstance(tail, bytes):
                tail = tail.decode(errors="replace")
            raise AssertionError(f"waiting for {what or _describe(pred)}: the process exited "
                                 f"{proc.returncode} first; last value {_short(value)}; its stderr ends:\n"
                                 f"{(tail or '')[-2000:]}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"waiting for {what or _describe(pred)}: not true within {timeout:g} s; "
                                 f"last value {_short(value)}")
        time.sleep(interval)


class Follow:
    """Reads a text or binary pipe line by line in a thread; ``text`` is everything read so far.

    Use it for a subprocess's stderr when a test waits on what the process logs, then ``join()`` once
    the process has exited to have the rest.
    """

    def __init__(self, pipe: IO) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, name="follow", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        end = "" if isinstance(self._pipe, io.TextIOBase) else b""
        for line in iter(self._pipe.readline, end):
            if isinstance(line, bytes):
                line = line.decode(errors="replace")
            with self._lock:
                self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def has(self, needle: str) -> bool:
        return needle in self.text

    def join(self, timeout: float = 10.0) -> str:
        """Wait until the pipe is at its end (the process exited); everything read."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the pipe did not reach its end within {timeout:g} s")
        return self.text
