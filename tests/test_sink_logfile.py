"""The log file's life under the sink, and a sink whose worker crashes.

Real files and a real :class:`edge.journal.Journal` in tmp_path: the log file is deleted (``rm``),
moved away (logrotate without copytruncate), copied and truncated (logrotate's copytruncate), replaced
by a symlink, deleted during an outage and deleted just before a stop. A durable sink's new file must
hold every event from the first one written to the lost file onward, once each and in order; a memory
sink says how many were lost. Then an exception is put into a feed (the worker's loop) and into the
Unix sink's socket thread: logged with its traceback, counted, delivery resumes.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest
from test_sink_durable import event, journal_append
from waiting import wait_until

from edge.errors import SinkError
from edge.journal import Journal
from edge.sinks import LogSinkConfig, Sink, UnixSinkConfig, create_sink


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal", fsync="never")
    yield j
    j.close()


def seqs(path: Path) -> list[int]:
    return [json.loads(x)["seq"] for x in path.read_text().splitlines()] if path.exists() else []


def log_sink(path: Path, journal: Journal | None, **kw) -> Sink:
    sink = create_sink(LogSinkConfig(type="log", path=str(path), **kw), "log")
    sink.retry_s = (0.02, 0.1)
    if journal is not None:
        sink.attach_journal(journal)
    return sink


def add(journal: Journal, sink: Sink, n: int) -> list[int]:
    """Journal ``n`` events and wait until the sink has delivered everything journaled."""
    out = [journal_append(journal, event(i))["seq"] for i in range(n)]
    assert journal.flush(5)
    assert sink.wait_for(lambda st: st["pending"] == 0, 10), sink.stats()
    wait_until(lambda: journal.cursor("log") == out[-1], what="the cursor at the newest event")
    return out


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "edge.sinks.log"]


def test_deleted_file_is_created_again_with_what_the_lost_one_held(tmp_path, journal, caplog):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, journal)
    sink.open()
    first = add(journal, sink, 5)
    assert seqs(path) == first
    path.unlink()                                    # rm events.jsonl: the sink holds a deleted file
    more = add(journal, sink, 3)
    wait_until(lambda: seqs(path) == first + more, what="the new file with the lost events and the new ones")
    st = sink.stats()
    assert (st["reopened"], st["errors"], st["dropped"], st["state"]) == (1, 0, 0, "open")
    assert sink.close() == 0
    assert seqs(path) == first + more                # nothing lost, nothing twice
    (warning,) = warnings_of(caplog)
    assert "deleted" in warning and "5 event(s)" in warning and f"seq {first[0]} onward" in warning


def test_moved_away_file_is_whole_and_the_new_one_goes_on(tmp_path, journal, caplog):
    path, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    sink = log_sink(path, journal)
    sink.open()
    first = add(journal, sink, 4)
    path.rename(rotated)                             # logrotate without copytruncate
    more = add(journal, sink, 3)
    assert sink.close() == 0
    assert (seqs(rotated), seqs(path)) == (first, more)  # nothing rewritten: the old file is whole
    assert sink.stats()["reopened"] == 1
    (warning,) = warnings_of(caplog)
    assert "moved away" in warning


def test_copytruncate_needs_nothing(tmp_path, journal, caplog):
    path, copy = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    sink = log_sink(path, journal)
    sink.open()
    first = add(journal, sink, 4)
    shutil.copyfile(path, copy)                      # logrotate's copytruncate: copy, then cut to zero
    os.truncate(path, 0)
    more = add(journal, sink, 3)
    assert sink.close() == 0
    assert (seqs(copy), seqs(path)) == (first, more)
    assert path.read_text().startswith("{")           # appended at 0, no hole of NUL bytes
    assert sink.stats()["reopened"] == 0 and warnings_of(caplog) == []


def test_memory_sink_says_how_many_were_lost(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, None, durable=False)
    sink.open()
    for i in range(4):
        sink.submit(event(i).record(i + 1))
    assert sink.wait_for(lambda st: st["delivered"] == 4, 5)
    path.unlink()
    sink.submit(event(4).record(5))
    assert sink.wait_for(lambda st: st["delivered"] == 5, 5)
    assert sink.close() == 0
    assert seqs(path) == [5] and sink.stats()["reopened"] == 1
    (warning,) = warnings_of(caplog)
    assert "4 event(s)" in warning and "lost" in warning and "durable: true" in warning


def test_deleted_during_an_outage_is_noticed_at_the_reopen(tmp_path, journal, caplog):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, journal)
    down = {"on": False}
    real = sink._write

    def failing(record: dict) -> None:  # the disk is full: every write fails while set
        if down["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(record)
    sink._write = failing  # type: ignore[method-assign]
    sink.open()
    first = add(journal, sink, 4)
    down["on"] = True
    journal_append(journal, event(4))
    assert sink.wait_for(lambda st: st["state"] == "reconnecting", 5), sink.stats()
    path.unlink()                                    # the user frees space by removing the log
    down["on"] = False
    wait_until(lambda: seqs(path) == first + [5], what="the new file with the lost events and the kept one")
    assert sink.close() == 0
    assert any("deleted" in w and "4 event(s)" in w for w in warnings_of(caplog))


def test_deleted_before_a_stop_is_rewritten_at_the_next_start(tmp_path, journal):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, journal)
    sink.open()
    first = add(journal, sink, 4)
    path.unlink()
    sink.close()        # what the lost file held is written again now (the worker noticed) or waits in the journal
    again = log_sink(path, journal)
    again.open()
    assert again.wait_for(lambda st: st["pending"] == 0, 5)
    assert again.close() == 0
    assert seqs(path) == first and journal.cursor("log") == first[-1]


def test_deleted_while_idle_is_back_without_waiting_for_an_event(tmp_path, journal):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, journal)
    sink.open()
    first = add(journal, sink, 3)
    path.unlink()
    wait_until(lambda: seqs(path) == first, what="the lost events in a new file, no new event needed")
    assert sink.stats()["reopened"] == 1 and sink.close() == 0


def test_deleted_before_a_stop_that_comes_first_is_rewritten_at_the_next_start(tmp_path, journal):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, journal)
    sink._idle = lambda: None  # type: ignore[method-assign]  # the stop comes before the worker looks
    sink.open()
    first = add(journal, sink, 4)
    path.unlink()
    assert sink.close() == 4                          # what the lost file held waits in the journal again
    assert journal.cursor("log") == first[0] - 1
    again = log_sink(path, journal)
    again.open()
    assert again.wait_for(lambda st: st["delivered"] == 4, 5) and again.close() == 0
    assert seqs(path) == first


def test_a_symlink_path_is_refused_unless_followed(tmp_path):
    target, link = tmp_path / "target.jsonl", tmp_path / "events.jsonl"
    target.write_text("")
    link.symlink_to(target)
    with pytest.raises(SinkError) as e:
        log_sink(link, None).open()
    msg = str(e.value)
    assert msg.startswith(f"sink log: file {link}: is a symlink") and "follow_symlinks: true" in msg
    assert "\n" not in msg and e.value.exit_code == 69
    sink = log_sink(link, None, follow_symlinks=True)
    sink.open()
    sink.submit(event(0).record(1))
    assert sink.wait_for(lambda st: st["delivered"] == 1, 5) and sink.close() == 0
    assert seqs(target) == [1]
    assert LogSinkConfig.model_fields["follow_symlinks"].description


def test_a_symlink_planted_while_running_is_not_written_through(tmp_path, journal, caplog):
    path, victim = tmp_path / "events.jsonl", tmp_path / "victim"
    victim.write_text("precious\n")
    sink = log_sink(path, journal)
    sink.open()
    first = add(journal, sink, 2)
    path.unlink()
    path.symlink_to(victim)
    journal_append(journal, event(2))
    assert sink.wait_for(lambda st: st["state"] == "reconnecting" and st["errors"] >= 1, 5), sink.stats()
    wait_until(lambda: "is a symlink" in caplog.text, what="the failed write's warning")  # logged after the count
    assert victim.read_text() == "precious\n"
    path.unlink()                                    # the link is removed: the sink writes again
    wait_until(lambda: seqs(path) == first + [3], what="the lost events and the new one in a new file")
    assert sink.close() == 0 and victim.read_text() == "precious\n"


# --- a sink thread never dies silently ------------------------------------------------------------------
@pytest.mark.parametrize("durable", [True, False])
def test_a_crash_in_the_feed_is_logged_counted_and_delivery_resumes(tmp_path, journal, caplog, durable):
    path = tmp_path / "events.jsonl"
    sink = log_sink(path, journal if durable else None, durable=durable)
    feed = sink._feed
    real, calls = feed.next, {"n": 0}

    def broken(timeout: float):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected bug")
        return real(timeout)
    feed.next = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="edge.sinks"):
        sink.open()
        for i in range(6):
            if durable:
                journal_append(journal, event(i))
            else:
                sink.submit(event(i).record(i + 1))
        assert sink.wait_for(lambda st: st["delivered"] == 6 and st["state"] == "open", 10), sink.stats()
        st = sink.stats()
        assert (st["crashes"], st["dropped"]) == (1, 0)
        assert sink.close() == 0
    assert seqs(path) == [1, 2, 3, 4, 5, 6]          # from where it was: nothing lost, nothing twice
    (crash,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "worker thread crashed (RuntimeError: injected bug)" in crash.getMessage()
    assert crash.exc_info is not None and "delivering again" in caplog.text


def test_a_crash_that_repeats_backs_off_and_is_not_fatal(tmp_path, journal, caplog):
    sink = log_sink(tmp_path / "events.jsonl", journal)
    feed = sink._feed
    real, failing = feed.next, {"on": True}

    def broken(timeout: float):
        if failing["on"]:
            raise ValueError("unreadable record")
        return real(timeout)
    feed.next = broken  # type: ignore[method-assign]
    sink.open()
    journal_append(journal, event(0))
    assert sink.wait_for(lambda st: st["crashes"] >= 3, 10), sink.stats()
    assert sink.stats()["state"] == "reconnecting" and sink._thread.is_alive()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1                          # repeats are rate-limited
    failing["on"] = False
    assert sink.wait_for(lambda st: st["delivered"] == 1 and st["state"] == "open", 10), sink.stats()
    assert sink.close() == 0


def test_a_crash_of_the_unix_socket_thread_is_counted_and_the_socket_reopened(tmp_path, caplog):
    path = tmp_path / "events.sock"
    sink = create_sink(UnixSinkConfig(type="unix", path=str(path)), "unix")
    sink.retry_s = (0.02, 0.1)
    real, crashed = sink._accept, {"done": False}

    def broken(sel) -> None:
        if not crashed["done"]:
            crashed["done"] = True
            raise RuntimeError("injected bug")
        real(sel)
    sink._accept = broken  # type: ignore[method-assign]
    sink.open()
    first = socket.socket(socket.AF_UNIX)
    first.connect(str(path))                          # the accept crashes the socket thread
    assert sink.wait_for(lambda st: st["crashes"] == 1, 5), sink.stats()
    first.close()
    sink.submit(event(0).record(1))                   # fails (thread gone): the base reopens the socket
    assert sink.wait_for(lambda st: st["state"] == "open" and st["errors"] == 1, 5), sink.stats()
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    assert sink.wait_subscribers(1, 5)
    sink.submit(event(1).record(2))
    client.settimeout(5)
    assert json.loads(client.makefile().readline())["seq"] == 2
    client.close()
    assert sink.close() == 0
    assert "socket thread crashed (RuntimeError: injected bug)" in caplog.text
