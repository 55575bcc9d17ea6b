"""Stdout sink: one JSON or text line per event, for journald (under systemd) or a pipe.

``sys.stdout`` is looked up at each write (so a test or a caller can redirect it), and every line
is written and flushed at once so a reader sees events as they happen. When the reader closes the
pipe, the sink says so once and drops every later event (counted) instead of failing each time.
"""
from __future__ import annotations

import io
import os
import sys
from typing import Any, Literal

from pydantic import Field

from edge.errors import SinkError
from edge.sinks.base import FORMATTERS, DeviceGone, Sink, SinkConfigBase


class StdoutSinkConfig(SinkConfigBase):
    type: Literal["stdout"] = Field(description="one line per event on standard output (journald under systemd)")
    format: Literal["json", "text"] = Field("json", description="json: the event's JSON; text: "
                                                                "'START swipe_left 0.93 door'")


class StdoutSink(Sink):
    """Events as lines on standard output."""

    type = "stdout"
    config = StdoutSinkConfig

    def __init__(self, cfg: StdoutSinkConfig, name: str) -> None:
        super().__init__(cfg, name)
        self.target = "stdout"
        self._format = FORMATTERS[cfg.format]

    def _details(self) -> str:
        return f" ({self.cfg.format})"

    def _open_device(self) -> None:
        """Raises: SinkError when the process has no stdout (None or closed)."""
        out = sys.stdout
        if out is None or getattr(out, "closed", False):
            raise SinkError(f"{self.where}: not available (the process has no standard output)")

    def _write(self, event: dict[str, Any]) -> None:
        line = self._format(event)
        out = sys.stdout
        if out is None:
            raise DeviceGone("standard output is gone")
        try:
            out.write(line)
            out.flush()
        except BrokenPipeError:
            _silence(out)
            raise DeviceGone("the reader closed the pipe") from None
        except ValueError:  # "I/O operation on closed file"
            raise DeviceGone("standard output was closed") from None

    def _close_device(self) -> None:
        pass  # stdout belongs to the process


def _silence(out: Any) -> None:
    """Point the dead pipe's descriptor at /dev/null, so Python's flush at exit does not print a
    BrokenPipeError traceback (the remedy the Python docs give for SIGPIPE)."""
    try:
        fd = out.fileno()
    except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except OSError:
        pass
