"""GPIO output lines behind one small interface, :class:`GpioLines`, with two drivers.

- ``gpiod``: libgpiod v2 Python bindings (the ``gpiod`` package) on any Linux with a GPIO character
  device (/dev/gpiochipN): Intel NUC boards with a GPIO header, USB GPIO expanders, a Raspberry Pi,
  and a Jetson too. Lines are offsets on one chip; active-low is done by the kernel.
- ``jetson``: NVIDIA's Jetson.GPIO (RPi.GPIO-style API, 40-pin header numbers, BOARD or BCM). It is
  imported only when asked for: importing it anywhere but on a Jetson raises.

Both request the lines once as outputs, inactive, and release them on close. Every failure to open
is one :class:`SinkError` line that names the chip or pin and says what to do.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge.errors import SinkError
from edge.util import lazy_import

CONSUMER = "edge-tsm"  # shown by gpioinfo as the lines' user
_GROUP_HINT = ("add the service user to the gpio group, and give that group the chip with a udev rule "
               "(see docs/install.md)")


class GpioLines(Protocol):
    """Output lines, already requested: the sink drives them by line number (offset or pin)."""

    def set(self, line: int, active: bool) -> None:
        """Drive one line to its active (or inactive) level. Raises: OSError."""

    def close(self) -> None:
        """Release the lines (the sink has set them inactive first)."""


def chip_path(chip: str) -> str:
    """``gpiochip0`` -> ``/dev/gpiochip0``; a path is kept as it is."""
    return chip if "/" in chip else f"/dev/{chip}"


def chips_here(dev: Path = Path("/dev")) -> list[str]:
    """The GPIO chip devices present (``/dev/gpiochip0``, ...), in numeric order."""
    found = [p for p in dev.glob("gpiochip*") if p.name[8:].isdigit()]
    return [str(p) for p in sorted(found, key=lambda p: int(p.name[8:]))]


def is_jetson(root: Path = Path("/")) -> bool:
    """True on an NVIDIA Jetson (L4T): /etc/nv_tegra_release, or a device tree that says nvidia,tegra."""
    if (root / "etc/nv_tegra_release").exists():
        return True
    try:
        return b"nvidia,tegra" in (root / "proc/device-tree/compatible").read_bytes()
    except OSError:
        return False


def detect_driver(root: Path = Path("/")) -> str:
    """The driver ``auto`` means here: ``jetson`` on a Jetson, else ``gpiod``."""
    return "jetson" if is_jetson(root) else "gpiod"


def _labels(lines: dict[str, int], line: int) -> str:
    return ", ".join(label for label, n in lines.items() if n == line)


# --- gpiod (libgpiod v2) ----------------------------------------------------------------------------
class GpiodLines:
    """Lines of one libgpiod v2 ``LineRequest``."""

    def __init__(self, request: Any, values: tuple[Any, Any]) -> None:
        self._req = request
        self._inactive, self._active = values

    def set(self, line: int, active: bool) -> None:
        try:
            self._req.set_value(line, self._active if active else self._inactive)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - RequestReleasedError and the like: the lines are gone
            raise OSError(errno.EBADF, f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        self._req.release()


def open_gpiod(cfg: Any, where: str, chip_factory: Callable[[str], Any] | None = None) -> GpiodLines:
    """Request ``cfg.lines`` on ``cfg.chip`` as outputs, inactive, with ``cfg.active_low``.

    ``chip_factory`` stands in for ``gpiod.Chip`` (tests give a fake chip; the rest is the real code).

    Raises:
        SinkError: gpiod is not installed, the chip is missing, not a GPIO chip or not permitted,
            a line does not exist on it, or a line is used by another program.
    """
    need = {"what": f"{where}: driver gpiod", "package": "gpiod", "error": SinkError, "missing": ("gpiod",),
            "install": "pip install 'edge-tsm[gpio]' (or pip install gpiod: the libgpiod v2 bindings)"}
    gpiod = lazy_import("gpiod", **need)
    line_mod = lazy_import("gpiod.line", **need)  # missing in gpiod v1: said as a failed import
    Direction, Value = line_mod.Direction, line_mod.Value
    path = chip_path(cfg.chip)
    try:
        chip = (chip_factory or gpiod.Chip)(path)
    except OSError as e:
        raise SinkError(f"{where}: {_open_cause(e)}") from None
    try:
        info = chip.get_info()
        offsets = sorted(set(cfg.lines.values()))
        for line in offsets:
            if line >= info.num_lines:
                raise SinkError(f"{where}: line {line} ({_labels(cfg.lines, line)}) does not exist: {info.name} "
                                f"[{info.label}] has {info.num_lines} lines, 0-{info.num_lines - 1}")
        settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE,
                                      active_low=cfg.active_low)
        try:
            request = chip.request_lines(config={tuple(offsets): settings}, consumer=CONSUMER)
        except OSError as e:
            raise SinkError(f"{where}: {_request_cause(e, chip, cfg.lines, offsets)}") from None
    finally:
        chip.close()  # the request keeps its own file descriptor
    return GpiodLines(request, (Value.INACTIVE, Value.ACTIVE))


def _open_cause(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return f"no such device (GPIO chips here: {', '.join(chips_here()) or 'none'})"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({_GROUP_HINT})"
    if e.errno in (errno.ENODEV, errno.ENOTTY, errno.EINVAL):
        return f"not a GPIO chip (GPIO chips here: {', '.join(chips_here()) or 'none'})"
    return f"cannot open ({e.strerror or e})"


def _request_cause(e: OSError, chip: Any, lines: dict[str, int], offsets: list[int]) -> str:
    if e.errno == errno.EBUSY:
        users = []
        for line in offsets:
            try:
                li = chip.get_line_info(line)
            except (OSError, ValueError):
                continue
            if li.used:
                users.append(f"line {line} ({_labels(lines, line)}) by {li.consumer or 'the kernel'!r}")
        return "line busy: used " + ("; ".join(users) if users else "by another program or driver")
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"cannot request lines: permission denied ({_GROUP_HINT})"
    return f"cannot request lines {', '.join(map(str, offsets))} ({e.strerror or e})"


# --- Jetson.GPIO -----------------------------------------------------------------------------------
class JetsonLines:
    """Pins set up with Jetson.GPIO; active-low is done here (Jetson.GPIO has no such setting)."""

    def __init__(self, gpio: Any, pins: list[int], active_low: bool) -> None:
        self._gpio, self._pins, self._active_low = gpio, pins, active_low

    def set(self, line: int, active: bool) -> None:
        g = self._gpio
        try:
            g.output(line, g.HIGH if active != self._active_low else g.LOW)
        except (RuntimeError, ValueError) as e:
            raise OSError(errno.EIO, f"pin {line}: {e}") from e

    def close(self) -> None:
        self._gpio.cleanup(self._pins)


def open_jetson(cfg: Any, where: str) -> JetsonLines:
    """Set up ``cfg.lines`` (header pins in ``cfg.numbering``) as outputs at their inactive level.

    Raises:
        SinkError: Jetson.GPIO is missing or cannot run here, the numbering clashes with the
            process's, a pin is not a GPIO pin, or access is denied.
    """
    try:
        import Jetson.GPIO as GPIO  # noqa: N814 - the library's own spelling
    except ImportError as e:
        raise SinkError(f"{where}: driver jetson needs Jetson.GPIO (on the Jetson: pip install Jetson.GPIO; "
                        f"elsewhere use driver: gpiod) ({' '.join(str(e).split())})") from None
    except Exception as e:  # noqa: BLE001 - it raises RuntimeError when this is not a Jetson
        raise SinkError(f"{where}: Jetson.GPIO cannot run here ({' '.join(str(e).split())}); "
                        f"off a Jetson use driver: gpiod") from None
    mode = GPIO.BOARD if cfg.numbering == "board" else GPIO.BCM
    pins = sorted(set(cfg.lines.values()))
    done: list[int] = []
    try:
        current = GPIO.getmode()
        if current not in (None, mode):
            raise SinkError(f"{where}: Jetson.GPIO is already set to other pin numbering in this process "
                            f"(give every gpio sink the same numbering)")
        GPIO.setwarnings(False)
        GPIO.setmode(mode)
        for pin in pins:
            try:
                GPIO.setup(pin, GPIO.OUT, initial=GPIO.HIGH if cfg.active_low else GPIO.LOW)
            except ValueError as e:
                raise SinkError(f"{where}: pin {pin} ({_labels(cfg.lines, pin)}) is not a usable GPIO pin in "
                                f"{cfg.numbering} numbering ({' '.join(str(e).split())})") from None
            done.append(pin)
    except (RuntimeError, OSError) as e:
        if done:
            GPIO.cleanup(done)
        text = " ".join(str(e).split())
        hint = f" ({_GROUP_HINT})" if isinstance(e, PermissionError) or "ermission" in text else ""
        raise SinkError(f"{where}: cannot set up pins {', '.join(map(str, pins))}: {text}{hint}") from None
    except SinkError:
        if done:
            GPIO.cleanup(done)
        raise
    return JetsonLines(GPIO, pins, cfg.active_low)


__all__ = ["CONSUMER", "GpioLines", "GpiodLines", "JetsonLines", "chip_path", "chips_here", "detect_driver",
           "is_jetson", "open_gpiod", "open_jetson"]
