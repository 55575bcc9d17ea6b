"""Unix socket sink against real subscribers: real AF_UNIX stream sockets in a temporary folder."""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import time

import pytest
from test_sinks import ev, sent

from edge.config import config_from_data
from edge.errors import EX_UNAVAILABLE, ConfigError, SinkError
from edge.sinks import Sink, UnixSinkConfig, create_sink


def unix_sink(path, **kw) -> Sink:
    return create_sink(UnixSinkConfig(type="unix", path=str(path), **kw), "unix")


class Reader:
    """A subscriber that reads everything on a thread (a well-behaved consumer)."""

    def __init__(self, path, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(str(path))
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.eof = False

    def start(self) -> Reader:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.eof = True
                self.buf += data
                self.cond.notify_all()
            if not data:
                return

    def lines(self, n: int, timeout: float = 10.0) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: self.buf.count(b"\n") >= n or self.eof, timeout), \
                f"{bytes(self.buf).count(10)} of {n} lines"
            return bytes(self.buf).decode().splitlines(keepends=True)

    def at_eof(self, timeout: float = 10.0) -> bool:
        """The sink closed the connection (waits for the reading thread to see it)."""
        with self.cond:
            return self.cond.wait_for(lambda: self.eof, timeout)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # a close() alone leaves the reading thread's recv holding it
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "run"  # short: sun_path holds 107 bytes
    d.mkdir()
    return d


def test_two_subscribers_get_the_same_events_in_order(folder):
    path = folder / "events.sock"
    sink = unix_sink(path)
    sink.open()
    a, b = Reader(path).start(), Reader(path).start()
    assert sink.wait_subscribers(2, 5)
    events = [ev(i, "start" if i % 2 == 0 else "end", camera="door" if i % 3 else "yard") for i in range(50)]
    for e in events:
        sink.submit(e)
    assert a.lines(50) == b.lines(50) == sent(events)
    assert sink.close() == 0
    assert a.lines(50) and a.at_eof() and b.at_eof() and not path.exists()  # closed: subscribers see EOF, file gone
    assert sink.stats().items() >= {"delivered": 50, "dropped": 0, "pending": 0, "errors": 0, "crashes": 0,
                                      "state": "closed"}.items()


def test_a_subscriber_gets_events_from_when_it_connects(folder):
    path = folder / "events.sock"
    sink = unix_sink(path)
    sink.open()
    sink.submit(ev(0))                          # nobody there: delivered to nobody, no error
    assert sink.wait_for(lambda st: st["delivered"] == 1, 5)
    late = Reader(path).start()
    assert sink.wait_subscribers(1, 5)
    sink.submit(ev(1))
    assert late.lines(1) == sent([ev(1)])
    late.close()
    assert sink.wait_subscribers(0, 5)          # a subscriber that hangs up is noticed and forgotten
    assert sink.close() == 0


def test_a_stalled_subscriber_is_dropped_the_others_get_everything_and_submit_never_blocks(folder, caplog):
    path = folder / "events.sock"
    sink = unix_sink(path, client_buffer=300, queue_size=100_000)
    sink.open()
    stalled = Reader(path, rcvbuf=4096)         # connected, never reads
    good = Reader(path).start()
    assert sink.wait_subscribers(2, 5)
    n = 3000                                    # ~1 MB: far more than the kernel buffer plus 300 events
    events = [ev(i, pad="x" * 300) for i in range(n)]
    took = 0.0
    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        for k in range(0, n, 100):             # bursts of 100 (< client_buffer), which a reader keeps up with
            t0 = time.monotonic()
            for e in events[k:k + 100]:
                sink.submit(e)
            took = max(took, time.monotonic() - t0)
            good.lines(k + 100)
        assert good.lines(n) == sent(events)
        assert sink.wait_for(lambda st: st["delivered"] == n, 10), sink.stats()
    assert took < 0.2, f"a burst of 100 submits took {took:.2f} s"
    assert sink.slow_disconnected == 1 and sink.subscribers() == 1
    assert len([r for r in caplog.records if "fell 300 events behind" in r.getMessage()]) == 1
    got = bytearray()                           # what the stalled one had received before it was cut off
    stalled.sock.settimeout(5)
    while chunk := stalled.sock.recv(65536):
        got += chunk
    lines = bytes(got).decode().splitlines(keepends=True)
    assert 0 < len(lines) < n and lines == sent(events)[:len(lines)]  # a whole-line prefix, then EOF
    assert sink.close() == 0
    assert sink.stats()["dropped"] == 0


def test_max_clients_refuses_the_extra_one(folder):
    path = folder / "events.sock"
    sink = unix_sink(path, max_clients=1)
    sink.open()
    first = Reader(path).start()
    assert sink.wait_subscribers(1, 5)
    extra = Reader(path).start()
    extra.lines(0)
    with extra.cond:
        assert extra.cond.wait_for(lambda: extra.eof, 5)  # accepted by the kernel, then closed by the sink
    sink.submit(ev(0))
    assert first.lines(1) == sent([ev(0)])
    assert sink.refused == 1 and sink.close() == 0


def test_mode_and_group_bits_are_set(folder):
    path = folder / "events.sock"
    sink = unix_sink(path, mode="0640", group=str(os.getgid()))
    sink.open()
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == os.getgid()
    assert sink.close() == 0
    with pytest.raises(ConfigError, match="group 'no-such-group-here' does not exist") as e:
        unix_sink(folder / "other.sock", group="no-such-group-here").open()
    assert e.value.exit_code == 78  # a config error (issue 16, item 8), not a device one


def test_a_stale_socket_file_is_reused_a_live_one_is_not(folder, caplog):
    path = folder / "events.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))                     # what a crash leaves behind: the file, nobody listening
    crashed.close()
    sink = unix_sink(path)
    with caplog.at_level(logging.INFO, logger="edge.sinks"):
        sink.open()
    assert "removed a stale socket file" in caplog.text
    r = Reader(path).start()
    assert sink.wait_subscribers(1, 5)
    with pytest.raises(SinkError, match="another process is listening on it"):
        unix_sink(path).open()                  # a second daemon must not steal the socket
    assert path.exists()
    sink.submit(ev(0))
    assert r.lines(1) == sent([ev(0)])
    assert sink.close() == 0 and not path.exists()


@pytest.mark.parametrize("case", ["regular file", "missing folder", "folder is a file", "read-only folder",
                                  "directory", "too long"])
def test_bad_paths_are_one_line_sink_errors(folder, case):
    path = {"regular file": folder / "events.sock", "missing folder": folder / "nope" / "events.sock",
            "folder is a file": folder / "f" / "events.sock", "read-only folder": folder / "ro" / "events.sock",
            "directory": folder / "dir", "too long": folder / ("x" * 120)}[case]
    want = {"regular file": "exists and is a regular file, not a socket", "missing folder": "does not exist",
            "folder is a file": "is not a folder", "read-only folder": "Permission denied",
            "directory": "exists and is a folder", "too long": "path too long"}[case]
    if case == "regular file":
        path.write_text("precious")
    elif case == "folder is a file":
        (folder / "f").write_text("")
    elif case == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere")
        (folder / "ro").mkdir(mode=0o555)
    elif case == "directory":
        path.mkdir()
    with pytest.raises(SinkError) as e:
        unix_sink(path).open()
    msg = str(e.value)
    assert e.value.exit_code == EX_UNAVAILABLE and "\n" not in msg and want in msg and str(path) in msg
    if case == "regular file":
        assert path.read_text() == "precious"   # never removed


def test_config_mode_must_be_a_quoted_octal_string():
    base = {"cameras": [{"name": "c", "source": 0}]}
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.mode: expected the mode as a quoted octal string"):
        config_from_data({**base, "sinks": [{"type": "unix", "mode": 0o660}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.mode: expected an octal mode such as '0660', got '0999'"):
        config_from_data({**base, "sinks": [{"type": "unix", "mode": "0999"}]})
    cfg = config_from_data({**base, "sinks": [{"type": "unix"}]}).sinks[0]
    assert (cfg.path, cfg.mode, cfg.group, cfg.max_clients, cfg.client_buffer) == \
        ("/run/edge-tsm/events.sock", "0660", None, 16, 256)
    assert create_sink(cfg, "unix").durable is False
    json.dumps(cfg.model_dump())
