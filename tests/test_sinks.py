"""Event sinks: one contract for every registered sink, then each sink against real parts: captured
stdout, a real pipe, real files and /dev/full, and real pseudo-terminal pairs (``ptys`` in
conftest.py) for serial: unplugged by closing the master, replugged by re-pointing a symlink.
The GPIO sink's own tests are in test_gpio_sink.py; here it runs the contract on fake lines. The MQTT
and Unix socket sinks run it against a real mosquitto and a real socket; their own tests are in
test_mqtt_sink.py and test_unix_sink.py."""
from __future__ import annotations

import itertools
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest
from fakegpio import FakeDriver

from edge.config import json_schema
from edge.errors import EX_UNAVAILABLE, ConfigError, SinkError
from edge.sinks import (
    SINK_TYPES,
    SINKS,
    GpioSinkConfig,
    LogSinkConfig,
    MqttSinkConfig,
    SerialSinkConfig,
    Sink,
    SinkConfig,
    StdoutSinkConfig,
    UnixSinkConfig,
    create_sink,
    gpio,
)
from edge.sinks.base import json_line

FAST = {"initial_s": 0.02, "max_s": 0.1}  # serial reconnect backoff for tests


def ev(seq: int, kind: str = "start", camera: str = "door", label: str = "swipe_left",
       score: float = 0.93, **extra) -> dict:
    ts = "2026-11-24T14:03:05.123Z"
    return {"v": 1, "event": kind, "id": f"{camera}-{seq}", "camera": camera, "label": label, "score": score,
            "ts": ts, "start_ts": ts, "frames": 5, "seq": seq + 1, **extra}


def sent(events: list[dict], seqs: typing.Iterable[int] | None = None) -> list[str]:
    """The JSON lines a sink sends for ``events``: each a copy numbered by the sink (1, 2, ...)."""
    return [json_line(e if seqs is None else {**e, "seq": s})
            for e, s in zip(events, seqs or [None] * len(events), strict=False)]


def repoint(link: Path, target: str) -> None:
    """Atomically point ``link`` at ``target`` (a new symlink renamed over the old one, like udev)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def gate(sink: Sink) -> tuple[threading.Event, threading.Event]:
    """Hold the sink's worker inside its next write until ``release`` is set (the device 'blocks')."""
    real = sink._write
    entered, release = threading.Event(), threading.Event()

    def gated(event: dict) -> None:
        entered.set()
        release.wait(10)
        real(event)

    sink._write = gated  # type: ignore[method-assign]
    return entered, release


class Rig:
    """One sink type (JSON lines) and a reader for what it delivered, so the contract tests run over
    SINKS; a new sink type fails here until it gets its rig. What the rig reads accumulates across the
    sinks it made and the devices they wrote to (a restart, a replugged port)."""

    _devices = itertools.count()

    def __init__(self, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture, ptys,
                 monkeypatch: pytest.MonkeyPatch, broker=None, session: str | None = None) -> None:
        self.kind, self.tmp, self.capsys, self.ptys = kind, tmp_path, capsys, ptys
        self.log = self.file = tmp_path / "events.jsonl"  # log: the path configured / the file read
        self.pty = ptys() if kind == "serial" else None
        self.port = self.pty.path if self.pty else ""
        self.lines: list[str] = []    # delivered so far (serial, unix, stdout: read off the device)
        self.written: list[str] = []  # gpio: each event its _write took
        self.gpio = FakeDriver()
        if kind == "gpio":  # no chip here: fake lines behind the gpiod driver's slot
            monkeypatch.setitem(gpio.DRIVERS, "gpiod", self.gpio)
        self.sock_path, self.client, self.buf = tmp_path / "events.sock", None, b""  # unix: one subscriber
        self.unix = threading.Condition()  # the subscriber is replaced (by the sink's worker) at each reopen
        self.subscriber, self.device, self.broker = None, f"rig{next(self._devices)}", broker  # mqtt
        if kind == "mqtt":
            self.subscriber = self.subscribe(broker.port, f"edge-tsm/{self.device}/events/#", session)
        self.cfg = {"stdout": lambda **kw: StdoutSinkConfig(type="stdout", format="json", **kw),
                    "log": lambda **kw: LogSinkConfig(type="log", path=str(self.log), **kw),
                    "serial": lambda **kw: SerialSinkConfig(type="serial", port=self.port, format="json", **kw),
                    "gpio": lambda **kw: GpioSinkConfig(type="gpio", driver="gpiod", lines={"swipe_left": 17},
                                                        **{"pulse_ms": 5, **kw}),
                    "mqtt": lambda **kw: MqttSinkConfig(type="mqtt", host="127.0.0.1", port=broker and broker.port,
                                                        device=self.device, **kw),
                    "unix": lambda **kw: UnixSinkConfig(type="unix", path=str(self.sock_path), **kw),
                    }[kind]

    def subscribe(self, port: int, topic: str, session: str | None):
        from mqttbroker import Subscriber
        return Subscriber(port, topic, session=session)

    def sink(self, **kw) -> Sink:
        sink = create_sink(self.cfg(**kw), self.kind)
        if self.kind == "gpio":  # it drives pins, not lines: record each event its _write took
            real = sink._write

            def recorded(event: dict) -> None:
                real(event)
                self.written.append(json_line(event))
            sink._write = recorded  # type: ignore[method-assign]
        if self.kind == "unix":  # a subscriber connects as soon as the socket is there, and after each reopen
            real_open = sink._open_device

            def opened() -> None:
                real_open()
                self._subscribe(sink)
            sink._open_device = opened  # type: ignore[method-assign]
        return sink

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.subscriber is not None:
            self.subscriber.close()

    def read(self, sink: Sink, n: int) -> list[str]:
        """Every line delivered so far, once at least ``n`` are through."""
        if self.kind == "serial":
            if len(self.lines) < n:
                self.lines += [ln.decode() for ln in self.pty.read_lines(n - len(self.lines))]
            return list(self.lines)
        if self.kind == "mqtt":  # acknowledged by the broker; the subscriber gets them right after
            return [m.payload.decode() + "\n" for m in self.subscriber.wait(lambda ms: len(ms) >= n)]
        if self.kind == "unix":  # the sink's worker may be replacing the subscriber meanwhile (a reopen)
            deadline = time.monotonic() + 10
            with self.unix:
                while len(self.lines) < n and time.monotonic() < deadline:
                    if not self._take(0.2):  # nothing yet, or the end of a subscriber the sink closed
                        self.unix.wait(0.2)
            return list(self.lines)
        assert sink.wait_for(lambda _: len(self._collect()) >= n, 5), (sink.stats(), self._collect())
        return self._collect()

    def _take(self, timeout: float) -> bool:
        """unix (``self.unix`` held): what the subscriber has within ``timeout`` s into ``lines``; False at
        its end or when nothing came."""
        if self.client is None or not select.select([self.client], [], [], timeout)[0]:
            return False
        data = self.client.recv(65536)
        *whole, self.buf = (self.buf + data).split(b"\n")
        self.lines += [ln.decode() + "\n" for ln in whole]
        return bool(data)

    def _subscribe(self, sink: Sink) -> None:
        """unix: read the old subscriber to its end (the sink closed it), then connect a new one."""
        with self.unix:
            if self.client is not None:
                while self._take(5):
                    pass
                self.client.close()
            self.client, self.buf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), b""
            self.client.connect(str(self.sock_path))
            assert sink.wait_subscribers(1, 5)
            self.unix.notify_all()

    def _collect(self) -> list[str]:
        if self.kind == "gpio":
            return list(self.written)
        if self.kind == "stdout":
            self.lines += self.capsys.readouterr().out.splitlines(keepends=True)
            return list(self.lines)
        return self.file.read_text().splitlines(keepends=True) if self.file.exists() else []


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory):
    """One real mosquitto for this module's MQTT rigs (skipped without the binary, failed in CI)."""
    from mqttbroker import Broker
    broker = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture(params=sorted(SINKS))
def rig(request, tmp_path, capsys, ptys, monkeypatch):
    broker = request.getfixturevalue("mqtt_broker") if request.param == "mqtt" else None
    r = Rig(request.param, tmp_path, capsys, ptys, monkeypatch, broker)
    yield r
    r.close()


# --- the registry and the contract every sink keeps ------------------------------------------------
def test_registry_and_config_union_come_from_one_list():
    union = typing.get_args(typing.get_args(SinkConfig)[0])
    assert union == tuple(cls.config for cls in SINK_TYPES)
    assert list(SINKS) == [typing.get_args(m.model_fields["type"].annotation)[0] for m in union]
    assert [SINKS[cls.type] for cls in SINK_TYPES] == list(SINK_TYPES)  # each class's type is its config's tag
    assert all(cls.config.__module__ == cls.__module__ for cls in SINK_TYPES)  # the config lives beside its sink


def test_every_sink_config_key_is_described_in_the_schema():
    defs = json.loads(json_schema())["$defs"]
    for cls in SINK_TYPES:
        props = defs[cls.config.__name__]["properties"]
        assert set(props) == set(cls.config.model_fields)
        assert [k for k, v in props.items() if not v.get("description")] == [], cls.config.__name__


def test_importing_the_config_loads_no_driver_package():
    code = ("import sys, edge.config, edge.sinks\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'paho', 'serial', 'gpiod', 'Jetson'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_pyserial_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)  # as if not installed; the sink module itself imports fine
    with pytest.raises(SinkError) as e:
        create_sink(SerialSinkConfig(type="serial", port="/dev/ttyUSB0"), "uart")
    assert str(e.value) == "sink uart: type 'serial' needs the pyserial package: pip install pyserial"


def test_unknown_type_is_a_config_error():
    class Fake:
        type = "carrier-pigeon"
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        create_sink(Fake(), "x")


def test_contract_delivers_in_order(rig):
    sink = rig.sink()
    assert sink.stats()["state"] == "closed"
    sink.open()
    assert sink.stats()["state"] == "open"
    events = [ev(i, "start" if i % 2 == 0 else "end") for i in range(20)]
    for e in events:
        sink.submit(e)
    assert rig.read(sink, 20) == sent(events)
    assert all(e["seq"] == i + 1 for i, e in enumerate(events))  # seq is the daemon's, passed through
    assert sink.close() == 0
    assert sink.stats().items() >= {"delivered": 20, "dropped": 0, "pending": 0, "errors": 0, "crashes": 0,
                                      "state": "closed"}.items()


def test_contract_filters_by_camera_and_kind(rig):
    sink = rig.sink(cameras=["door"], events=["start"])
    sink.open()
    events = [ev(i, kind, cam) for i, (kind, cam) in
              enumerate([("start", "door"), ("end", "door"), ("start", "yard"), ("end", "yard"), ("start", "door")])]
    for e in events:
        sink.submit(e)
    assert rig.read(sink, 2) == sent([events[0], events[4]])
    assert sink.close() == 0
    assert sink.stats()["delivered"] == 2 and sink.stats()["dropped"] == 0


def test_contract_overflow_drops_oldest_counts_and_warns_once(rig, caplog):
    sink = rig.sink(queue_size=3)
    entered, release = gate(sink)
    sink.open()
    events = [ev(i) for i in range(10)]
    sink.submit(events[0])
    assert entered.wait(5)                      # the worker holds event 0 in a blocked write
    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        for e in events[1:]:
            sink.submit(e)                      # never blocks: 1..6 are pushed out by 7, 8, 9
    st = sink.stats()
    assert (st["dropped"], st["pending"], st["delivered"]) == (6, 4, 0)
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    release.set()
    assert rig.read(sink, 4) == sent([events[i] for i in (0, 7, 8, 9)], [1, 8, 9, 10])  # the gap shows
    assert sink.close() == 0
    assert sink.stats()["delivered"] == 4


def test_close_returns_promptly_with_a_stuck_device_and_counts_what_is_left(tmp_path, caplog):
    sink = create_sink(LogSinkConfig(type="log", path=str(tmp_path / "e.jsonl")), "log")
    entered, release = gate(sink)
    sink.open()
    worker = sink._thread
    for i in range(3):
        sink.submit(ev(i))
    assert entered.wait(5)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        assert sink.close(timeout=0.1) == 3
    assert time.monotonic() - t0 < 2.0
    assert "3 event(s) not delivered" in caplog.text
    sink.submit(ev(9))                          # after close: not accepted, counted
    assert sink.stats()["dropped"] == 1 and sink.stats()["state"] == "closed"
    with pytest.raises(SinkError, match="already closed"):
        sink.open()
    release.set()
    worker.join(5)
    assert not worker.is_alive()


# --- stdout ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_stdout_lines_exact_on_fd_1(capfd, fmt):
    sink = create_sink(StdoutSinkConfig(type="stdout", format=fmt), "stdout")
    sink.open()
    sink.submit(ev(7, "start", score=0.926))
    sink.submit(ev(8, "end", score=0.5, label="swipe_right", camera="yard"))
    assert sink.close() == 0
    assert capfd.readouterr().out == ("START swipe_left 0.93 door\nEND swipe_right 0.50 yard\n" if fmt == "text" else
        '{"v":1,"event":"start","id":"door-7","camera":"door","label":"swipe_left","score":0.926,'
        '"ts":"2026-11-24T14:03:05.123Z","start_ts":"2026-11-24T14:03:05.123Z","frames":5,"seq":8}\n'
        '{"v":1,"event":"end","id":"yard-8","camera":"yard","label":"swipe_right","score":0.5,'
        '"ts":"2026-11-24T14:03:05.123Z","start_ts":"2026-11-24T14:03:05.123Z","frames":5,"seq":9}\n')


def test_stdout_broken_pipe_closes_once_and_counts_drops(monkeypatch, caplog):
    r, w = os.pipe()
    out = open(w, "w", encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    os.close(r)                                 # the reader went away
    sink = create_sink(StdoutSinkConfig(type="stdout"), "stdout")
    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        sink.open()
        for i in range(3):
            sink.submit(ev(i))
        assert sink.wait_for(lambda st: st["state"] == "closed", 5)
        sink.submit(ev(3))
        assert sink.close() == 0
    assert sink.stats().items() >= {"delivered": 0, "dropped": 4, "pending": 0, "errors": 0, "crashes": 0,
                                      "state": "closed"}.items()
    assert len([rec for rec in caplog.records if "closed the pipe" in rec.getMessage()]) == 1
    out.close()                                 # flushes into /dev/null now: no BrokenPipeError


# --- log -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fsync", [False, True])
def test_log_appends_json_lines_to_an_existing_file(tmp_path, fsync):
    path = tmp_path / "events.jsonl"
    path.write_text('{"old":1}\n')
    sink = create_sink(LogSinkConfig(type="log", path=str(path), fsync=fsync), "log")
    sink.open()
    events = [ev(i) for i in range(5)]
    for e in events:
        sink.submit(e)
    assert sink.close() == 0
    assert path.read_text() == '{"old":1}\n' + "".join(sent(events))


def test_log_creates_missing_folders_and_lines_stay_whole_with_two_writers(tmp_path):
    path = tmp_path / "a" / "b" / "events.jsonl"
    sinks = [create_sink(LogSinkConfig(type="log", path=str(path)), f"log{k}") for k in (1, 2)]
    for s in sinks:
        s.open()
    big = "x" * 5000                             # > PIPE_BUF: whole only as one O_APPEND write each
    for i in range(200):
        for k, s in enumerate(sinks):
            s.submit(ev(i, camera=f"cam{k}", pad=big))
    assert [s.close() for s in sinks] == [0, 0]
    parsed = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(parsed) == 400
    for k in (0, 1):
        assert [p["seq"] for p in parsed if p["camera"] == f"cam{k}"] == list(range(1, 201))


def test_log_directory_as_path_is_a_sink_error(tmp_path):
    with pytest.raises(SinkError) as e:
        create_sink(LogSinkConfig(type="log", path=str(tmp_path)), "log").open()
    assert e.value.exit_code == EX_UNAVAILABLE
    assert str(tmp_path) in str(e.value) and "directory" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["parent is a file", "read-only folder"])
def test_log_unwritable_path_is_a_sink_error(tmp_path, case):
    parent = tmp_path / "parent"
    if case == "parent is a file":
        parent.write_text("")
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere")
        parent.mkdir(mode=0o555)
    path = parent / "events.jsonl"
    with pytest.raises(SinkError, match="not a folder" if case == "parent is a file" else "Permission denied") as e:
        create_sink(LogSinkConfig(type="log", path=str(path)), "log").open()
    assert str(path) in str(e.value) and e.value.exit_code == EX_UNAVAILABLE


def test_log_full_disk_keeps_events_retries_with_backoff_then_delivers(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    path.symlink_to("/dev/full")                # every write: ENOSPC
    sink = create_sink(LogSinkConfig(type="log", path=str(path), follow_symlinks=True), "log")
    sink.retry_s = (0.05, 0.2)
    events = [ev(i) for i in range(3)]
    with caplog.at_level(logging.INFO, logger="edge.sinks"):
        sink.open()
        t0 = time.monotonic()
        for e in events:
            sink.submit(e)
        assert sink.wait_for(lambda st: st["errors"] >= 3, 5), sink.stats()
        assert time.monotonic() - t0 >= 0.09    # backoff lo, then >= lo: not spinning
        st = sink.stats()
        assert (st["delivered"], st["dropped"], st["pending"], st["state"]) == (0, 0, 3, "reconnecting")
        repoint(path, str(tmp_path / "real.jsonl"))  # space again
        assert sink.wait_for(lambda st: st["delivered"] == 3, 5), sink.stats()
        assert sink.close() == 0
    assert (tmp_path / "real.jsonl").read_text() == "".join(sent(events))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert "delivering again" in caplog.text


# --- serial ----------------------------------------------------------------------------------------
def serial_sink(port: str, **kw) -> Sink:
    return create_sink(SerialSinkConfig(type="serial", port=port, **kw), "serial")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_serial_lines_arrive_byte_exact(ptys, fmt):
    pty = ptys()
    sink = serial_sink(pty.path, format=fmt)
    sink.open()
    events = [ev(1, "start", score=0.934), ev(1, "end", score=0.81)]
    for e in events:
        sink.submit(e)
    want = [b"START swipe_left 0.93 door\n", b"END swipe_left 0.81 door\n"] if fmt == "text" \
        else [line.encode() for line in sent(events)]
    assert pty.read_lines(2) == want
    assert sink.close() == 0
    assert pty.quiet() == b""


def test_serial_unplug_then_replug_loses_and_duplicates_nothing(ptys, tmp_path, caplog):
    pty1, link = ptys(), tmp_path / "ttyUSB0"
    repoint(link, pty1.path)
    sink = serial_sink(str(link), format="json", reconnect=FAST)
    want = [line.encode() for line in sent([ev(i) for i in range(12)])]
    with caplog.at_level(logging.INFO, logger="edge.sinks"):
        sink.open()
        for i in range(4):
            sink.submit(ev(i))
        assert pty1.read_lines(4) == want[:4]
        pty1.close()                            # unplug: the next write fails with EIO
        for i in range(4, 8):
            sink.submit(ev(i))
        assert sink.wait_for(lambda st: st["state"] == "reconnecting" and st["pending"] == 4, 5), sink.stats()
        pty2 = ptys()
        repoint(link, pty2.path)                # replug, under another tty name
        for i in range(8, 10):
            sink.submit(ev(i))
        assert pty2.read_lines(6) == want[4:10]
        assert sink.wait_for(lambda st: st["state"] == "open" and st["delivered"] == 10, 5), sink.stats()
        for i in range(10, 12):
            sink.submit(ev(i))
        assert pty2.read_lines(2) == want[10:]
        assert pty2.quiet() == b""
        assert sink.close() == 0
    st = sink.stats()
    assert (st["delivered"], st["dropped"], st["pending"]) == (12, 0, 0) and st["errors"] >= 1
    assert "Input/output error" in caplog.text and "delivering again" in caplog.text


def test_serial_backlog_while_away_keeps_the_newest_max_pending(ptys, tmp_path):
    pty1, pty2, link = ptys(), ptys(), tmp_path / "ttyACM0"
    repoint(link, pty1.path)
    sink = serial_sink(str(link), format="json", reconnect=FAST, max_pending=3)
    sink.open()
    pty1.close()
    sink.submit(ev(0))
    assert sink.wait_for(lambda st: st["state"] == "reconnecting", 5)
    for i in range(1, 10):
        sink.submit(ev(i))
    assert sink.wait_for(lambda st: st["dropped"] == 7, 5), sink.stats()
    repoint(link, pty2.path)
    assert pty2.read_lines(3) == [line.encode() for line in sent([ev(i) for i in (7, 8, 9)], [8, 9, 10])]
    assert sink.close() == 0
    assert pty2.quiet() == b""


def test_serial_close_interrupts_a_write_stuck_on_a_stalled_line(ptys):
    pty = ptys()                                # nobody reads: the tty buffer fills and write() blocks
    sink = serial_sink(pty.path, format="json", write_timeout_s=30.0)
    sink.open()
    worker = sink._thread
    for i in range(200):
        sink.submit(ev(i, pad="y" * 4000))
    assert sink.wait_for(lambda st: st["delivered"] >= 1, 5)
    t0 = time.monotonic()
    left = sink.close(timeout=0.2)
    assert time.monotonic() - t0 < 1.0          # without the interrupt: 0.2 s + the 1 s join, thread left
    assert left > 0 and not worker.is_alive()


@pytest.mark.parametrize("case", ["missing", "regular file", "not a tty"])
def test_serial_bad_port_is_a_one_line_sink_error(tmp_path, case):
    port = {"missing": str(tmp_path / "ttyUSB9"), "regular file": str(tmp_path / "file"),
            "not a tty": "/dev/null"}[case]
    if case == "regular file":
        Path(port).write_text("")
    with pytest.raises(SinkError) as e:  # a missing port is waited for unless at_start says require
        create_sink(SerialSinkConfig(type="serial", port=port, at_start="require"), "uart").open()
    msg = str(e.value)
    assert e.value.exit_code == EX_UNAVAILABLE and "\n" not in msg
    assert msg.startswith(f"sink uart: port {port}: ")
    assert ("cannot open (No such file or directory)" in msg) if case == "missing" else \
        ("not a serial port (tty)" in msg)
