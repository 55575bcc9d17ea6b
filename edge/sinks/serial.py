"""Serial sink (pyserial): one text or JSON line per event on a UART, USB-serial adapter or pty.

Opening at start fails with one line when the port is missing or is not a tty. While running, a
failed write (a USB adapter unplugged gives EIO, a stalled line a write timeout) closes the port;
the unsent event and every later one are kept (up to ``max_pending``, oldest dropped and counted),
the port is reopened with exponential backoff and jitter, and on reconnect the kept events go out
in order. The port is opened by path each time, so a udev symlink (/dev/serial/by-id/...) that
comes back under a new ttyUSBn is followed.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from edge.errors import SinkError
from edge.paths import show_path
from edge.schema import PosFloat, QueueSize, ReconnectConfig
from edge.sinks.base import FORMATTERS, Sink, SinkConfigBase
from edge.util import lazy_import

if TYPE_CHECKING:
    import serial

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

    def _details(self) -> str:
        return f" ({self.cfg.baud} baud, {self.cfg.format})"

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


def _open_cause(e: BaseException) -> str:
    """pyserial's open error as ``cannot open (Permission denied)`` or ``not a serial port (tty)``."""
    text = " ".join(str(e).split())
    if getattr(e, "errno", None) == errno.ENOTTY or os.strerror(errno.ENOTTY) in text:
        return _NOT_TTY
    if isinstance(getattr(e, "errno", None), int):
        return f"cannot open ({os.strerror(e.errno)})"  # type: ignore[attr-defined]
    return f"cannot open ({text})"
