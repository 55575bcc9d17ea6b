"""Serial sink (pyserial): one text or JSON line per event on a UART, USB-serial adapter or pty.

A port that is not there at start (a USB adapter that appears seconds into boot) is waited for by
default (``at_start: retry``): the sink starts "waiting", the rest of the daemon runs, the worker opens
the port with the reconnect backoff and then sends what the journal kept for it; ``at_start: require``
fails at start with one line, as does a port that exists but cannot work (not a tty, no permission). While running, a
failed write (a USB adapter unplugged gives EIO, a stalled line a write timeout) closes the port;
the unsent event and every later one are kept (up to ``max_pending``, oldest dropped and counted),
the port is reopened with exponential backoff and jitter, and on reconnect the kept events go out
in order. The port is opened by path each time, so a udev symlink (/dev/serial/by-id/...) that
comes back under a new ttyUSBn is followed.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from edge.errors import SinkError
from edge.paths import show_path
from edge.schema import PosFloat, QueueSize, ReconnectConfig
from edge.sinks.base import FORMATTERS, Sink, SinkConfigBase
from edge.util import lazy_import

if TYPE_CHECKING:
    import serial

logger = logging.getLogger(__name__)

_NOT_TTY = "not a serial port (tty)"
SERIAL_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000,
                1500000, 2000000, 3000000, 4000000)


class SerialSinkConfig(SinkConfigBase):
    type: Literal["serial"] = Field(description="one line per event on a serial port (pyserial)")
    port: str = Field(description="e.g. /dev/ttyUSB0, /dev/ttyACM0, /dev/ttyTHS1, or a udev link such as "
                                  "/dev/serial/by-id/... (followed again at each reopen)")
    baud: int = Field(115200, description=f"line speed: one of {', '.join(map(str, SERIAL_BAUDS))}")
    format: Literal["json", "text"] = Field("text", description="text: 'START swipe_left 0.93 door'; json: the "
                                                                "event's JSON")
    write_timeout_s: PosFloat = Field(1.0, description="a write the line does not take within this is a failed "
                                                       "write (the port is reopened, the event resent)")
    reconnect: ReconnectConfig = Field(ReconnectConfig(), description="backoff for reopening the port after a "
                                                                      "failed write (an adapter unplugged)")
    max_pending: QueueSize = Field(10000, description="events kept while the port is away (oldest dropped)")
    at_start: Literal["retry", "require"] = Field(
        "retry", description="when the port does not exist at start: retry: the daemon runs and the port is opened "
                             "with the reconnect backoff when it appears (state 'waiting'; check warns); require: "
                             "the daemon does not start (exit 69)")

    @field_validator("baud")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in SERIAL_BAUDS:
            raise ValueError(f"expected one of {', '.join(map(str, SERIAL_BAUDS))}")
        return v


class SerialSink(Sink):
    """Events as lines on a serial port."""

    type = "serial"
    config = SerialSinkConfig
    durable_default = True

    def __init__(self, cfg: SerialSinkConfig, name: str) -> None:
        """Raises: SinkError when pyserial is not installed."""
        super().__init__(cfg, name)
        self.target = f"port {show_path(cfg.port)}"
        self.max_pending = cfg.max_pending
        self.retry_s = (cfg.reconnect.initial_s, cfg.reconnect.max_s)
        self._format = FORMATTERS[cfg.format]
        self._serial = lazy_import("serial", what=f"sink {name}: type 'serial'", package="pyserial",
                                   install="pip install pyserial", error=SinkError, missing=("serial",))
        self._port: serial.Serial | None = None
        self._waiting = False        # not there at start: opened by the worker when it appears
        self._started = 0.0

    def _details(self) -> str:
        return f" ({self.cfg.baud} baud, {self.cfg.format}{'; not there yet, waiting' if self._waiting else ''})"

    def _open_at_start(self) -> str | None:
        """Open the port; one that does not exist (yet) is waited for with ``at_start: retry``.

        Raises:
            SinkError: the port cannot be opened and is not merely missing, or ``at_start: require`` (exit 69).
        """
        self._started = time.monotonic()
        try:
            self._open_device()
        except SinkError as e:
            if self.cfg.at_start != "retry" or not _absent(self.cfg.port):
                raise
            self._waiting = True
            rc = self.cfg.reconnect
            return (f"{e}; waiting for it (at_start: retry), opening it with backoff {rc.initial_s:.3g}.."
                    f"{rc.max_s:.3g} s while the rest runs")
        return None

    def probe(self) -> None:
        """What a reload checks before it hands the port over, without opening it (opening a serial port can
        reset the board behind it): a missing port is fine (waited for), one that is not a tty is not.

        Raises:
            SinkError: the port exists and is not a character device, or the path cannot work (exit 69).
        """
        try:
            st = os.stat(self.cfg.port)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise SinkError(f"{self.where}: cannot open ({getattr(e, 'strerror', None) or e})") from None
        if not stat.S_ISCHR(st.st_mode):
            raise SinkError(f"{self.where}: {_NOT_TTY}")

    def _stats(self) -> dict[str, Any]:
        st = super()._stats()
        if self._waiting and st.get("state") == "reconnecting":
            st["state"] = "waiting"  # not there yet since start (status shows which device is waited for)
        return st

    def _open_device(self) -> None:
        """Open and configure the port.

        Raises:
            SinkError: the port is missing, cannot be opened, or is not a tty (exit 69).
        """
        port, serial = self.cfg.port, self._serial
        try:
            st = os.stat(port)
        except OSError as e:
            raise SinkError(f"{self.where}: cannot open ({e.strerror or e})") from None
        except ValueError:  # a NUL byte or unencodable characters: not a path the OS can be asked about
            raise SinkError(f"{self.where}: not a valid device path (NUL byte or invalid characters)") from None
        if not stat.S_ISCHR(st.st_mode):
            raise SinkError(f"{self.where}: {_NOT_TTY}")
        try:
            ser = serial.Serial(port, baudrate=self.cfg.baud, write_timeout=self.cfg.write_timeout_s)
        except (serial.SerialException, OSError, ValueError) as e:
            raise SinkError(f"{self.where}: {_open_cause(e)}") from None
        if not os.isatty(ser.fileno()):
            ser.close()
            raise SinkError(f"{self.where}: {_NOT_TTY}")
        self._port = ser
        if self._waiting:
            with self._cond:
                self._waiting = False
            logger.warning("%s: the port is there now (after %.1f s); sending what was kept for it", self.where,
                           time.monotonic() - self._started)

    def _write(self, event: dict[str, Any]) -> None:
        if self._port is None:
            raise self._serial.SerialException("port not open")
        data = self._format(event).encode()
        n = self._port.write(data)
        if n != len(data):  # write cancelled by close(): not delivered
            raise self._serial.SerialTimeoutException(f"write interrupted after {n} of {len(data)} bytes")

    def _interrupt(self) -> None:
        port = self._port
        if port is not None and port.is_open:
            try:
                port.cancel_write()  # wakes a write blocked on a stalled line
            except (OSError, ValueError):
                pass

    def _close_device(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()


def _absent(port: str) -> bool:
    """Nothing at the port's path (it, or a folder on its way, does not exist): it may still appear."""
    try:
        os.stat(port)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _open_cause(e: BaseException) -> str:
    """pyserial's open error as ``cannot open (Permission denied)`` or ``not a serial port (tty)``."""
    text = " ".join(str(e).split())
    if getattr(e, "errno", None) == errno.ENOTTY or os.strerror(errno.ENOTTY) in text:
        return _NOT_TTY
    if isinstance(getattr(e, "errno", None), int):
        return f"cannot open ({os.strerror(e.errno)})"  # type: ignore[attr-defined]
    return f"cannot open ({text})"
