"""systemd's notify protocol in plain Python (no libsystemd): READY, WATCHDOG, STATUS, RELOADING, STOPPING.

``NOTIFY_SOCKET`` names an AF_UNIX datagram socket (a path, or ``@name`` for the abstract namespace);
each message is ``KEY=value`` lines. Without the variable (not under systemd) every call is a no-op.
``WATCHDOG_USEC`` (with ``WATCHDOG_PID`` naming this process, or unset) asks for ``WATCHDOG=1`` at least
that often: :class:`Watchdog` pings at half of it, and only while the daemon reports progress, so a
hung engine or capture makes systemd restart the service.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)
SEND_TIMEOUT_S = 2.0   # a notification that cannot be sent within this is dropped (warned once)


class Notifier:
    """Sends notify messages to ``NOTIFY_SOCKET``; silently does nothing when it is not set."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased); False when not sent (disabled or the socket failed)."""
        if not self.address:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # A manager that stops reading fills the socket's queue: a send then fails after this
                    # long instead of blocking the frame loop or the watchdog thread.
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(msg, addr)
                return True
            except OSError as e:
                if not self._warned:  # systemd gone or a wrong path: say it once, never fail the daemon
                    logger.warning("NOTIFY_SOCKET %s: cannot send (%s)", self.address, e.strerror or e)
                    self._warned = True
                return False

    def ready(self, status: str = "") -> bool:
        return self.send(ready=1, status=status) if status else self.send(ready=1)

    def reloading(self) -> bool:
        return self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def status(self, text: str) -> bool:
        return self.send(status=text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Watchdog:
    """A thread that pings ``WATCHDOG=1`` at half the watchdog interval while ``healthy()`` says so,
    and sends ``STATUS=`` every ``status_s`` seconds.

    ``healthy()`` returns ``(ok, reason)``; a False stops the pings (logged once, with the reason) and a
    later True resumes them. Without a watchdog interval it only sends the status.
    """

    def __init__(self, notifier: Notifier, healthy: Callable[[], tuple[bool, str]], status: Callable[[], str],
                 status_s: float = 5.0) -> None:
        self.notifier = notifier
        self.healthy = healthy
        self.status = status
        self.status_s = status_s
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unhealthy = ""

    def start(self) -> None:
        if not self.notifier.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        wd = self.notifier.watchdog_s
        tick = min(wd / 2 if wd else self.status_s, self.status_s)
        next_status = 0.0
        wait = 0.0  # the first round at once: systemd hears from us as soon as we are ready
        while not self._stop.wait(wait):
            wait = tick
            now = time.monotonic()
            if wd:
                ok, reason = self.healthy()
                if ok:
                    if self._unhealthy:
                        logger.warning("watchdog: progress again, pings resumed")
                    self._unhealthy = ""
                    self.notifier.watchdog()
                    self.pings += 1
                elif reason != self._unhealthy:
                    logger.error("watchdog: %s; no more pings, systemd will restart the service", reason)
                    self._unhealthy = reason
            if now >= next_status:
                try:
                    self.notifier.status(self.status())
                except Exception:  # noqa: BLE001 - a status line must never kill the watchdog
                    logger.exception("watchdog: status failed")
                next_status = now + self.status_s
