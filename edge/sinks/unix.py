"""Unix socket sink: a local stream socket that sends each connected subscriber every event as a JSON line.

A subscriber (``socat - UNIX-CONNECT:/run/edge-tsm/events.sock``, a Node-RED exec node, a script)
gets the events that happen from the moment it is accepted; it need not send anything (what it
sends is read and ignored). Live only (not durable): there is no replay for a subscriber that was
not there.

One thread runs a selector over the listening socket and the subscribers' non-blocking sockets.
``_write`` only appends the line to each subscriber's buffer and wakes it, so a subscriber never
slows the sink or the others: one that falls ``client_buffer`` events behind (on top of what the
kernel's socket buffer holds) is disconnected, counted and logged (rate-limited). More than
``max_clients`` subscribers are refused.

At open, a socket file left by a crash (nobody accepts on it) is removed; a path that is not a
socket, a socket that another process listens on, a missing or unwritable folder are SinkErrors.
The socket file gets ``mode`` and ``group`` and is removed at close. Under systemd the folder
/run/edge-tsm comes from the unit's ``RuntimeDirectory=edge-tsm``.
"""
from __future__ import annotations

import collections
import errno
import grp
import logging
import os
import re
import selectors
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from edge.errors import ConfigError, SinkError
from edge.paths import blocking_file, path_error, show_path
from edge.sinks.base import Sink, SinkConfigBase, json_line
from edge.util import RateLimit

logger = logging.getLogger(__name__)

_SELECT_S = 0.5      # longest blind wait of the selector thread (it is woken on every event and at close)
_FLUSH_S = 1.0       # clean close: how long subscribers get to take what is buffered for them
_JOIN_S = 3.0
_MAX_PATH = 107      # sun_path holds 108 bytes with the terminating NUL
_WARN_EVERY_S = 10.0


class UnixSinkConfig(SinkConfigBase):
    type: Literal["unix"] = Field(description="each event as a JSON line to every process connected to a local "
                                              "socket (live only)")
    path: str = Field("/run/edge-tsm/events.sock", description="the listening socket (its folder must exist: "
                                                               "systemd's RuntimeDirectory=edge-tsm)")
    mode: str = Field("0660", description="permission bits of the socket file, octal in quotes ('0660')")
    group: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="group (name or number) of the socket file, so its members may connect")
    max_clients: Annotated[int, Field(ge=1, le=1024)] = Field(16, description="more subscribers are refused")
    client_buffer: Annotated[int, Field(ge=1, le=1_000_000)] = Field(256, description="events waiting per subscriber; "
                                                                     "a subscriber that falls this far behind is "
                                                                     "disconnected, never waited for")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:  # not min_length: pydantic would refuse a name with bytes that are not UTF-8
        if not v:
            raise ValueError("expected a socket path such as /run/edge-tsm/events.sock")
        return v

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_quoted(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError(f"expected the mode as a quoted octal string such as '0660' (YAML reads an unquoted "
                             f"0660 as the number {0o660})")
        return v

    @field_validator("mode")
    @classmethod
    def _mode_octal(cls, v: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", v):
            raise ValueError("expected an octal mode such as '0660'")
        return v


class _Client:
    """One subscriber: its socket and the lines waiting for it (the first one maybe partly sent)."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock, self.number = sock, number
        self.queue: collections.deque[bytes] = collections.deque()
        self.offset = 0          # bytes of queue[0] already sent
        self.doomed = False      # fell too far behind: closed by the selector thread
        self.events = selectors.EVENT_READ
        try:
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                 struct.calcsize("3i")))
            self.who = f"subscriber {number} (pid {pid}, uid {uid})"
        except (OSError, AttributeError):
            self.who = f"subscriber {number}"


class UnixSink(Sink):
    """Events as JSON lines to every process connected to a local stream socket."""

    type = "unix"
    config = UnixSinkConfig

    def __init__(self, cfg: UnixSinkConfig, name: str) -> None:
        super().__init__(cfg, name)
        self.path = Path(cfg.path)
        self.target = f"socket {show_path(self.path)}"
        self.slow_disconnected = 0   # subscribers dropped for falling behind
        self.refused = 0             # connections refused at max_clients
        self._lock = threading.Condition()  # the clients and their queues; notified when the set changes
        self._clients: dict[int, _Client] = {}
        self._numbers = 0
        self._listener: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._serving: threading.Thread | None = None
        self._halt = False
        self._flush = False
        self._inode: tuple[int, int] | None = None
        self._slow_warn, self._refuse_warn = RateLimit(_WARN_EVERY_S), RateLimit(_WARN_EVERY_S)

    def _details(self) -> str:
        c = self.cfg
        return f" (mode {c.mode}{', group ' + c.group if c.group else ''}, up to {c.max_clients} subscribers)"

    def subscribers(self) -> int:
        """Subscribers connected now."""
        with self._lock:
            return sum(not c.doomed for c in self._clients.values())

    def wait_subscribers(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` subscribers are connected (True) or ``timeout`` s pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: sum(not c.doomed for c in self._clients.values()) == n, timeout)

    # --- open / close -------------------------------------------------------------------------------
    def _open_device(self) -> None:
        """Create the listening socket (removing a stale one) and start the selector thread.

        Raises:
            SinkError: missing or unwritable folder, a path that is not a socket or is in use, a
                group that cannot be set (exit 69).
            ConfigError: ``group`` names a group that does not exist (exit 78).
        """
        path, parent = self.path, self.path.parent
        try:
            raw = os.fsencode(path)
        except UnicodeEncodeError as e:
            raise SinkError(f"{self.where}: {path_error(e, path)}") from None
        if b"\0" in raw:  # bind() would quietly cut the path at the NUL
            raise SinkError(f"{self.where}: {path_error(ValueError('embedded null byte'), path)}")
        if len(raw) > _MAX_PATH:
            raise SinkError(f"{self.where}: path too long for a Unix socket (at most {_MAX_PATH} bytes); choose a "
                            f"shorter one")
        try:
            folder = parent.is_dir()
        except OSError as e:
            raise SinkError(f"{self.where}: cannot look at its folder: {path_error(e, parent)}") from None
        if not folder:
            blocker = blocking_file(parent)
            if blocker is not None:
                raise SinkError(f"{self.where}: {show_path(blocker)} is not a folder; choose another path")
            raise SinkError(f"{self.where}: the folder {show_path(parent)} does not exist (under systemd, "
                            f"RuntimeDirectory=edge-tsm makes /run/edge-tsm)")
        self._remove_stale()
        gid = self._gid()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(path))
        except OSError as e:
            sock.close()
            raise SinkError(f"{self.where}: cannot create the socket: {path_error(e, path)}") from None
        try:
            os.chmod(path, int(self.cfg.mode, 8))
            if gid is not None:
                os.chown(path, -1, gid)
            st = os.stat(path)
            sock.listen(min(self.cfg.max_clients, socket.SOMAXCONN))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            path.unlink(missing_ok=True)
            what = f"set group {self.cfg.group} on" if gid is not None and e.errno == errno.EPERM else "set up"
            raise SinkError(f"{self.where}: cannot {what} the socket ({e.strerror or e})") from None
        self._listener, self._inode = sock, (st.st_dev, st.st_ino)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._halt = self._flush = False
        self._serving = threading.Thread(target=self._serve, name=f"sink-{self.name}-socket", daemon=True)
        self._serving.start()

    def _remove_stale(self) -> None:
        """Remove a socket file nobody accepts on (left by a crash); refuse anything else at the path."""
        path = str(self.path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise SinkError(f"{self.where}: cannot inspect ({e.strerror or e})") from None
        if not stat.S_ISSOCK(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a symlink" if stat.S_ISLNK(st.st_mode) else \
                "a regular file" if stat.S_ISREG(st.st_mode) else "not a socket"
            raise SinkError(f"{self.where}: exists and is {kind}, not a socket (remove it or choose another path)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            logger.info("%s: removed a stale socket file (nobody listening; left by a crash?)", self.where)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            raise SinkError(f"{self.where}: exists and cannot be checked ({e.strerror or e})") from None
        finally:
            probe.close()
        raise SinkError(f"{self.where}: another process is listening on it (a second edge-tsm?)")

    def _gid(self) -> int | None:
        group = self.cfg.group
        if group is None:
            return None
        if group.isdigit():
            return int(group)
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"{self.where}: group {group!r} does not exist (a group name from /etc/group or "
                              "a number)") from None

    def _close_device(self) -> None:
        """Stop the selector thread: after a clean close subscribers get up to _FLUSH_S s for what is
        buffered; then every subscriber is disconnected and the socket file removed."""
        with self._lock:
            self._halt = True
            self._flush = self._closing_cleanly()
            self._lock.notify_all()
        self._wake()
        serving, self._serving = self._serving, None
        if serving is not None and serving is not threading.current_thread():
            serving.join(_JOIN_S + _FLUSH_S)
            if serving.is_alive():
                logger.warning("%s: socket thread did not stop within %.1f s", self.where, _JOIN_S + _FLUSH_S)

    # --- the worker's side ----------------------------------------------------------------------------
    def _write(self, event: dict[str, Any]) -> None:
        data = json_line(event).encode()
        slow: list[_Client] = []
        with self._lock:
            if self._halt or self._serving is None or not self._serving.is_alive():
                raise OSError(errno.EBADF, "socket thread not running")
            for c in self._clients.values():
                if c.doomed:
                    continue
                if len(c.queue) >= self.cfg.client_buffer:
                    c.doomed = True
                    slow.append(c)
                    self.slow_disconnected += 1
                else:
                    c.queue.append(data)
            total = self.slow_disconnected
            if slow:
                self._lock.notify_all()
        self._wake()
        if slow and self._slow_warn.allow():
            logger.warning("%s: %s fell %d events behind; disconnected (%d slow subscriber(s) so far)", self.where,
                           slow[0].who, self.cfg.client_buffer, total)

    def _wake(self) -> None:
        with self._lock:  # the pipe is closed under the lock: never write to a reused descriptor
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                pass  # full: the thread is woken anyway

    # --- the selector thread --------------------------------------------------------------------------
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        deadline = None
        try:
            while True:
                with self._lock:
                    if self._halt:
                        if not self._flush or self._abort.is_set():
                            break
                        deadline = deadline or time.monotonic() + _FLUSH_S
                        if time.monotonic() >= deadline or not any(c.queue for c in self._clients.values()):
                            break
                    changes = [(c, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.queue else 0))
                               for c in self._clients.values()]
                    doomed = [c for c in self._clients.values() if c.doomed]
                for c in doomed:
                    self._drop(sel, c, "too slow")
                for c, want in changes:
                    if not c.doomed and want != c.events:
                        sel.modify(c.sock, want, c)
                        c.events = want
                for key, mask in sel.select(_SELECT_S if deadline is None else 0.05):
                    if key.data is None:
                        self._accept(sel)
                    elif key.data == "wake":
                        while True:
                            try:
                                if not os.read(self._wake_r, 4096):
                                    break
                            except BlockingIOError:
                                break
                    else:
                        self._service(sel, key.data, mask)
        except Exception as e:  # noqa: BLE001 - a bug here must not go unnoticed: _write fails, the base reopens
            with self._lock:
                self._halt = True  # from now on _write fails: the base closes and reopens the socket
            self._count_crash(e, "socket", "the next event reopens the socket (subscribers connect again)")
        finally:
            self._shutdown(sel)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: logged, the listener stays
                logger.warning("%s: accept failed (%s)", self.where, e.strerror or e)
                return
            with self._lock:
                full = sum(not c.doomed for c in self._clients.values()) >= self.cfg.max_clients
                if full:
                    self.refused += 1
                    refused = self.refused
            if full:
                conn.close()
                if self._refuse_warn.allow():
                    logger.warning("%s: %d subscribers already (max_clients); refused a connection (%d so far)",
                                   self.where, self.cfg.max_clients, refused)
                continue
            conn.setblocking(False)
            self._numbers += 1
            c = _Client(conn, self._numbers)
            sel.register(conn, c.events, c)
            with self._lock:
                self._clients[c.number] = c
                self._lock.notify_all()
            logger.debug("%s: %s connected", self.where, c.who)

    def _service(self, sel: selectors.BaseSelector, c: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                if not c.sock.recv(4096):  # the subscriber closed its end; what it sends is ignored
                    self._drop(sel, c, "closed by the subscriber")
                    return
            except BlockingIOError:
                pass
            except OSError as e:
                self._drop(sel, c, e.strerror or str(e))
                return
        if mask & selectors.EVENT_WRITE:
            while True:
                with self._lock:
                    if not c.queue or c.doomed:
                        return
                    data, offset = c.queue[0], c.offset
                try:
                    n = c.sock.send(memoryview(data)[offset:])
                except BlockingIOError:
                    return
                except OSError as e:
                    self._drop(sel, c, e.strerror or str(e))
                    return
                with self._lock:
                    c.offset += n
                    if c.offset >= len(data):
                        c.queue.popleft()
                        c.offset = 0

    def _drop(self, sel: selectors.BaseSelector, c: _Client, why: str) -> None:
        with self._lock:
            if self._clients.pop(c.number, None) is None:
                return
            self._lock.notify_all()
        sel.unregister(c.sock)
        c.sock.close()
        logger.debug("%s: %s disconnected (%s)", self.where, c.who, why)

    def _shutdown(self, sel: selectors.BaseSelector) -> None:
        """Disconnect everyone, close the listener and the wake pipe, remove our socket file."""
        for c in list(self._clients.values()):
            self._drop(sel, c, "sink closed")
        sel.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._inode:  # not someone else's
                os.unlink(self.path)
        except OSError:
            pass
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
