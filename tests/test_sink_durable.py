"""The sink contract in durable mode: every sink whose config allows ``durable: true`` delivers from a real
:class:`edge.journal.Journal` in tmp_path, from its cursor.

Each sink type gets an outage of its own kind where one exists here: a full disk under the log file
(/dev/full), a serial adapter unplugged and replugged under another tty name (real ptys behind a
symlink), a real mosquitto stopped and started again (persistent, with a persistent subscriber), GPIO
lines that fail and cannot be requested again (fake lines, the sink's real code). Standard output and
the Unix socket have no outage that recovers, so theirs is an I/O error put in front of their write.
"""
from __future__ import annotations

import errno
import json
import os
import time

import pytest
from test_sinks import Rig, repoint

from edge.errors import SinkError
from edge.events import Event
from edge.journal import Journal
from edge.sinks import SINKS, LogSinkConfig, Sink, create_sink
from edge.sinks.base import json_line

DURABLE = sorted(t for t, cls in SINKS.items() if "durable" in cls.config.model_fields)
FAST = {"initial_s": 0.02, "max_s": 0.1}


def event(i: int, kind: str = "start", camera: str = "door") -> Event:
    return Event(kind=kind, id=f"{camera}-{i}", camera=camera, label="swipe_left", score=0.93,
                 ts=1_795_000_000.0 + i, start_ts=1_795_000_000.0 + i, frames=5)


def journal_append(journal: Journal, e: Event) -> dict:
    """Journal ``e`` (its writer thread commits it soon after) and return the record the sinks get."""
    return e.record(journal.append(e))


class FirstCopies:
    """A persistent MQTT subscriber that, as a consumer does, skips the broker's own redeliveries: a
    message the broker sends again after its restart (DUP set) whose payload it already has. A second
    copy the sink published (no DUP) still counts, so a repeat by the sink fails the tests."""

    def __new__(cls, port: int, topic: str, session: str | None):
        from mqttbroker import Subscriber

        class Subscriber1(Subscriber):
            def _on_message(self, client, userdata, msg) -> None:
                with self.cond:
                    if msg.dup and any(m.payload == msg.payload for m in self.messages):
                        return
                super()._on_message(client, userdata, msg)
        return Subscriber1(port, topic, session=session)


class DurableRig(Rig):
    """A :class:`Rig` whose sinks are journal-fed, with an outage and a restore per sink type."""

    def __init__(self, kind, tmp_path, capsys, ptys, monkeypatch, broker=None) -> None:
        super().__init__(kind, tmp_path, capsys, ptys, monkeypatch, broker, session=f"durable-{kind}-subscriber")
        self.journal = Journal(tmp_path / "journal", fsync="never")
        self.records: list[dict] = []
        self.down = False  # stdout, unix: their write fails while set
        if kind == "log":  # the configured path is a link: pointed at /dev/full for the outage
            self.log, self.file = tmp_path / "events-link.jsonl", tmp_path / "events.jsonl"
            repoint(self.log, str(self.file))
        if kind == "serial":  # the configured port is a link, like udev's /dev/serial/by-id/...
            self.port = str(tmp_path / "ttyUSB0")
            repoint(tmp_path / "ttyUSB0", self.pty.path)

    def subscribe(self, port: int, topic: str, session: str | None):
        return FirstCopies(port, topic, session)

    def sink(self, **kw) -> Sink:
        extra = {"serial": {"reconnect": FAST}, "mqtt": {"reconnect": FAST, "timeout_s": 2.0},
                 "gpio": {"mode": "level", "reconnect": FAST}}.get(self.kind, {})  # level: every event sets a line
        if self.kind == "log":  # its path is a link (see __init__)
            extra = {"follow_symlinks": True}
        sink = super().sink(durable=True, **extra, **kw)
        sink.retry_s = (0.02, 0.1)
        if self.kind in ("stdout", "unix"):
            real = sink._write

            def failing(record: dict) -> None:
                if self.down:
                    raise OSError(errno.EIO, "Input/output error (injected)")
                real(record)
            sink._write = failing  # type: ignore[method-assign]
        assert sink.durable
        sink.attach_journal(self.journal)
        return sink

    def append(self, events: list[Event]) -> list[dict]:
        recs = [journal_append(self.journal, e) for e in events]
        self.records += recs
        return recs

    def outage(self, sink: Sink) -> None:
        if self.kind == "log":       # the disk fills up under the open file, and stays full at each reopen
            repoint(self.log, "/dev/full")
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, sink._fd)
            os.close(full)
        elif self.kind == "serial":  # unplugged: the next write fails with EIO, reopening finds no tty
            self.pty.close()
        elif self.kind == "mqtt":    # the broker goes away (and has gone when stop() returns)
            self.broker.stop()
        elif self.kind == "gpio":    # the USB GPIO bridge is pulled: lines fail, requesting them again fails
            self.gpio.made[-1].fail = OSError(errno.EIO, "Input/output error")
            self.gpio.fail_next[:] = [SinkError("sink gpio: chip /dev/gpiochip0: no such device")] * 100_000
        else:
            self.down = True

    def restore(self) -> None:
        if self.kind == "log":
            repoint(self.log, str(self.file))
        elif self.kind == "serial":  # replugged under another tty name; the link follows it
            self.pty = self.ptys()
            repoint(self.tmp / "ttyUSB0", self.pty.path)
        elif self.kind == "mqtt":
            self.broker.start()
        elif self.kind == "gpio":
            self.gpio.fail_next.clear()
        else:
            self.down = False

    def close(self) -> None:
        super().close()
        self.journal.close()


@pytest.fixture(params=DURABLE)
def rig(request, tmp_path, capsys, ptys, monkeypatch):
    broker = None
    if request.param == "mqtt":  # its own broker: this one is stopped; sessions survive its restart
        from mqttbroker import Broker
        broker = Broker(tmp_path / "broker", persist=True).start()
    r = DurableRig(request.param, tmp_path, capsys, ptys, monkeypatch, broker)
    yield r
    r.close()
    if broker is not None:
        broker.stop()


def lines(records: list[dict]) -> list[str]:
    return [json_line(r) for r in records]


def test_every_sink_can_be_durable():
    assert DURABLE == sorted(SINKS)  # README: durable: true on any sink


def test_durable_delivers_the_journal_in_order_with_its_seq(rig):
    sink = rig.sink()
    sink.open()
    recs = rig.append([event(i, "start" if i % 2 == 0 else "end") for i in range(12)])
    assert [r["seq"] for r in recs] == list(range(1, 13))
    assert rig.read(sink, 12) == lines(recs)
    assert sink.wait_for(lambda st: st["delivered"] == 12 and st["pending"] == 0, 5), sink.stats()
    sink.submit(recs[0])                                  # fed by the journal: submit is ignored
    assert sink.stats()["pending"] == 0
    assert sink.close() == 0
    assert sink.stats().items() >= {"delivered": 12, "dropped": 0, "pending": 0, "errors": 0, "crashes": 0,
                                      "state": "closed"}.items()
    assert rig.journal.cursor(rig.kind) == rig.journal.last_seq == 12


def test_durable_outage_resumes_from_the_cursor_nothing_lost_or_repeated(rig):
    sink = rig.sink()
    sink.open()
    rig.append([event(i) if i % 2 == 0 else event(i - 1, "end") for i in range(4)])
    assert rig.read(sink, 4) == lines(rig.records)
    assert sink.wait_for(lambda st: st["delivered"] == 4, 5)  # counted (and the cursor moved) after the write
    assert rig.journal.cursor(rig.kind) == 4
    rig.outage(sink)
    rig.append([event(i) if i % 2 == 0 else event(i - 1, "end") for i in range(4, 9)])
    assert sink.wait_for(lambda st: st["state"] == "reconnecting" and st["errors"] >= 1, 10), sink.stats()
    st = sink.stats()
    assert rig.journal.cursor(rig.kind) == st["delivered"] and st["delivered"] + st["pending"] == 9
    rig.restore()
    rig.append([event(i) if i % 2 == 0 else event(i - 1, "end") for i in range(9, 13)])
    assert rig.read(sink, 13) == lines(rig.records)  # all of them, once each, in order
    assert sink.wait_for(lambda st: st["delivered"] == 13 and st["pending"] == 0 and st["state"] == "open", 10)
    assert sink.close() == 0
    assert rig.read(sink, 13) == lines(rig.records)
    assert rig.journal.cursor(rig.kind) == 13 and sink.stats()["dropped"] == 0


def test_durable_close_leaves_the_rest_in_the_journal_and_a_restart_delivers_it(rig):
    sink = rig.sink()
    sink.open()
    rig.append([event(i) if i % 2 == 0 else event(i - 1, "end") for i in range(3)])
    assert rig.read(sink, 3) == lines(rig.records)
    assert sink.wait_for(lambda st: st["delivered"] == 3, 5)
    rig.outage(sink)
    rig.append([event(i) if i % 2 == 0 else event(i - 1, "end") for i in range(3, 8)])
    assert sink.wait_for(lambda st: st["state"] == "reconnecting", 10), sink.stats()
    t0 = time.monotonic()
    left = sink.close(timeout=5.0)                 # failing: no use waiting, the journal keeps them
    assert time.monotonic() - t0 < 2.0
    delivered = sink.stats()["delivered"]
    assert left == 8 - delivered > 0 and rig.journal.cursor(rig.kind) == delivered
    rig.restore()
    rig.append([event(i) if i % 2 == 0 else event(i - 1, "end") for i in range(8, 10)])  # while no sink runs
    again = rig.sink()                             # a restart: a new sink, the same journal and name
    again.open()
    assert rig.read(again, 10) == lines(rig.records)  # the rest, then the new ones; nothing twice
    assert again.close() == 0
    assert again.stats()["delivered"] == 10 - delivered and rig.journal.cursor(rig.kind) == 10


# --- the journal feed's own rules (one sink type is enough) ---------------------------------------------
def log_sink(path, journal: Journal, **kw) -> Sink:
    sink = create_sink(LogSinkConfig(type="log", path=str(path), durable=True, **kw), "log")
    sink.attach_journal(journal)
    return sink


def test_a_new_sink_starts_with_the_next_event_and_reports_what_waits(tmp_path):
    journal = Journal(tmp_path / "journal", fsync="never")
    try:
        for i in range(3):                  # before the sink existed: not for it
            journal_append(journal, event(i))
        assert journal.flush(5)
        first = log_sink(tmp_path / "e.jsonl", journal)
        assert journal.cursor("log") == 3
        first.open()
        new = [journal_append(journal, event(i)) for i in range(3, 5)]
        assert first.wait_for(lambda st: st["delivered"] == 2, 5) and first.close() == 0
        assert (tmp_path / "e.jsonl").read_text() == "".join(lines(new))  # not the old ones
        later = [journal_append(journal, event(i)) for i in range(5, 9)]
        assert journal.flush(5)
        second = create_sink(LogSinkConfig(type="log", path=str(tmp_path / "e.jsonl"), durable=True), "log")
        assert second.attach_journal(journal) == 4  # journaled while no sink ran
        second.open()
        assert second.wait_for(lambda st: st["delivered"] == 4, 5) and second.close() == 0
        assert (tmp_path / "e.jsonl").read_text() == "".join(lines(new + later))
    finally:
        journal.close()


def test_filtered_records_move_the_cursor_past_them(tmp_path):
    journal = Journal(tmp_path / "journal", fsync="never")
    try:
        sink = log_sink(tmp_path / "e.jsonl", journal, cameras=["door"], events=["start"])
        sink.open()
        recs = [journal_append(journal, event(i, kind, cam)) for i, (kind, cam) in
                enumerate([("start", "door"), ("end", "door"), ("start", "yard"), ("start", "door"), ("end", "yard")])]
        assert sink.wait_for(lambda st: st["delivered"] == 2, 5)
        assert sink.wait_for(lambda _: journal.cursor("log") == 5, 5)  # the last two were skipped, not pending
        assert sink.close() == 0
        assert [json.loads(x)["seq"] for x in (tmp_path / "e.jsonl").read_text().splitlines()] == \
            [recs[0]["seq"], recs[3]["seq"]]
    finally:
        journal.close()


def test_events_removed_from_the_journal_before_delivery_are_counted_as_dropped(tmp_path):
    folder = tmp_path / "journal"
    journal = Journal(folder, fsync="never")
    log_sink(tmp_path / "e.jsonl", journal).close()  # known to the journal: cursor 0
    journal.close()
    journal = Journal(folder, fsync="never", segment_bytes=4096, max_bytes=8192)
    try:
        recs = [journal_append(journal, event(i)) for i in range(200)]  # ~45 KB: the oldest segments go
        journal.close()
        journal = Journal(folder, fsync="never", segment_bytes=4096, max_bytes=8192)  # a restart: nothing in memory
        sink = log_sink(tmp_path / "e.jsonl", journal)
        sink.open()
        assert sink.wait_for(lambda st: st["pending"] == 0 and st["delivered"] > 0, 10), sink.stats()
        st = sink.stats()
        assert st["delivered"] + st["dropped"] == 200 and st["dropped"] > 0
        got = [json.loads(x)["seq"] for x in (tmp_path / "e.jsonl").read_text().splitlines()]
        assert got == [r["seq"] for r in recs][st["dropped"]:]  # the newest ones, in order
        assert sink.close() == 0
    finally:
        journal.close()
