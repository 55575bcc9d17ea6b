"""The journal's writer thread (group commit; readers, subscribers and last_seq only see committed records),
its two rate-limited reports, MemoryJournal, and where the journal lives (state_dir, open_journal)."""
from __future__ import annotations

import errno
import logging
import os
import pwd
import threading
import time
from pathlib import Path

import pytest
from test_journal import appended, ev, lines
from waiting import wait_until

import edge.journal as journal_mod
from edge.config import Config
from edge.errors import ConfigError, InputError
from edge.journal import Journal, MemoryJournal, locate_state_dir, open_journal, state_dir


class Gate:
    """Holds the journal's writer inside its next segment write until ``release()``."""

    def __init__(self, monkeypatch, j: Journal) -> None:
        self.entered, self.open = threading.Event(), threading.Event()
        real_write = journal_mod.os.write

        def write(fd, data):
            if fd == j._fd:
                self.entered.set()
                self.open.wait(10)
            return real_write(fd, data)
        monkeypatch.setattr(journal_mod.os, "write", write)

    def release(self) -> None:
        self.open.set()


@pytest.fixture
def fsyncs(monkeypatch):
    """Counts os.fsync calls (all of them: segments and cursors)."""
    calls: list[int] = []
    real = journal_mod.os.fsync

    def fsync(fd):
        calls.append(fd)
        return real(fd)
    monkeypatch.setattr(journal_mod.os, "fsync", fsync)
    return calls


def test_group_commit_many_appends_few_fsyncs(tmp_path, monkeypatch, fsyncs):
    j = Journal(tmp_path, fsync="always")
    gate = Gate(monkeypatch, j)
    j.append(ev(0))
    assert gate.entered.wait(5)  # the writer is on the disk with batch 1; the frame loop goes on
    t0 = time.monotonic()
    seqs = [j.append(ev(i)) for i in range(1, 200)]
    assert time.monotonic() - t0 < 1.0 and seqs == list(range(2, 201))  # append never waits for the disk
    gate.release()
    assert j.flush(5) and j.last_seq == 200
    assert j.stats.batches == 2 and j.stats.fsyncs == 2 and len(fsyncs) == 2  # one write and one fsync a batch
    j.close()
    assert [e["seq"] for e in lines(j)] == list(range(1, 201)) and j.stats.appended == 200


def test_readers_and_subscribers_see_only_committed_records(tmp_path, monkeypatch):
    j = Journal(tmp_path, fsync="always")
    appended(j, 2)
    r = j.reader(after_seq=j.last_seq)
    got: list[int] = []
    j.subscribe(lambda records: got.extend(x["seq"] for x in records))
    gate = Gate(monkeypatch, j)
    assert j.append(ev(2)) == 3
    assert gate.entered.wait(5)
    assert r.next(0.1) is None and got == []  # written maybe, committed not yet
    assert j.appended_seq == 3 and j.last_seq == 2 and not j.flush(0.05)
    gate.release()
    assert r.next(5)["seq"] == 3 and j.flush(5) and got == [3] and j.last_seq == 3
    j.close()


def test_subscribers_get_batches_in_seq_order(tmp_path):
    j = Journal(tmp_path, fsync="never")
    batches: list[list[int]] = []
    j.subscribe(lambda records: batches.append([x["seq"] for x in records]))

    def produce(k: int) -> None:
        for i in range(100):
            j.append(ev(1000 * k + i))
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert j.flush(5)
    assert [s for b in batches for s in b] == list(range(1, 301)) and all(batches)
    j.close()


def test_a_failing_subscriber_does_not_stop_the_journal(tmp_path, caplog):
    j = Journal(tmp_path)
    got: list[int] = []

    def broken(records):
        raise KeyError("bug")
    j.subscribe(broken)
    j.subscribe(lambda records: got.extend(x["seq"] for x in records))
    appended(j, 2)
    j.unsubscribe(broken)
    appended(j, 1, 2)
    j.close()
    assert got == [1, 2, 3] and "subscriber" in caplog.text
    assert [e["seq"] for e in lines(j)] == [1, 2, 3]


class Recorder:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.inside, self.go = threading.Event(), threading.Event()

    def deliver(self, records: list[dict]) -> None:
        self.inside.set()
        self.go.wait(10)
        self.seqs.extend(x["seq"] for x in records)


def test_flush_and_unsubscribe_wait_for_the_subscribers(tmp_path):
    """flush(): committed *and* handed to the subscribers; after unsubscribe() the callback is not running.
    (A pipeline flushes, unsubscribes its bound method, then closes its sinks.)"""
    j = Journal(tmp_path)
    rec = Recorder()
    j.subscribe(rec.deliver)
    j.append(ev(0))
    assert rec.inside.wait(5)
    assert j.last_seq == 1 and not j.flush(0.05)  # committed, still being handed over
    threading.Timer(0.1, rec.go.set).start()
    j.unsubscribe(rec.deliver)  # a new bound-method object, equal to the subscribed one
    assert rec.seqs == [1]
    appended(j, 1, 1)
    assert rec.seqs == [1] and j.flush(0)
    j.close()


def test_close_commits_what_is_queued_and_then_refuses(tmp_path, monkeypatch, fsyncs):
    j = Journal(tmp_path, fsync="never")
    gate = Gate(monkeypatch, j)
    j.append(ev(0))
    assert gate.entered.wait(5)
    for i in range(1, 10):
        j.append(ev(i))
    threading.Timer(0.1, gate.release).start()
    j.close()
    assert j.last_seq == 10 and [e["seq"] for e in lines(j)] == list(range(1, 11))
    assert len(fsyncs) == 1  # fsync never: only the final one at close
    with pytest.raises(RuntimeError, match="append after close"):
        j.append(ev(10))
    r = j.reader(after_seq=5)  # readers go on after close
    assert r.next(1)["seq"] == 6


def test_interval_fsync_also_when_idle(tmp_path, fsyncs):
    j = Journal(tmp_path, fsync="interval", fsync_interval_s=0.05)
    appended(j, 1)
    # no later append needed to get it onto the disk
    wait_until(lambda: j.stats.fsyncs >= 1, timeout=5.0, what="the writer's fsync")
    j.close()


def test_append_and_cursor_failures_are_reported_independently(tmp_path, monkeypatch, caplog):
    """A cursor failure must not silence an append failure (one rate limit per kind of message)."""
    j = Journal(tmp_path)
    (tmp_path / "cursor-serial.json").mkdir()  # a cursor that cannot be replaced
    (tmp_path / "cursor-serial.json" / "x").write_text("")
    with caplog.at_level(logging.ERROR, logger="edge.journal"):
        j.set_cursor("serial", 1)
        j.set_cursor("serial", 2)
        real_write = journal_mod.os.write
        monkeypatch.setattr(journal_mod.os, "write", lambda fd, data: (_ for _ in ()).throw(
            OSError(errno.EIO, "Input/output error")) if fd == j._fd else real_write(fd, data))
        appended(j, 1)
        appended(j, 1, 1)
    assert caplog.text.count("cannot save the cursor of sink serial") == 1  # rate-limited ...
    assert caplog.text.count("cannot append (Input/output error)") == 1    # ... each on its own
    assert j.stats.cursor_failed == 2 and j.stats.failed == 2
    j.close()


def test_memory_journal_commits_in_append():
    m = MemoryJournal()
    got: list[dict] = []
    m.subscribe(got.extend)
    assert [m.append(ev(i)) for i in range(3)] == [1, 2, 3]
    assert m.last_seq == m.appended_seq == 3 and m.flush(0) and [x["seq"] for x in got] == [1, 2, 3]
    assert got[0] == ev(0).record(1)
    m.close()


# --- where the journal lives ---------------------------------------------------------------------------
def cfg(state: str | None = None, **journal) -> Config:
    return Config(cameras=[{"name": "door", "source": "synthetic"}], state_dir=state, journal=journal)


@pytest.fixture
def env(monkeypatch, tmp_path):
    for k in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_state_dir_resolution(env, tmp_path):
    assert locate_state_dir(None) == (tmp_path / "home/.local/state/edge-tsm",
                                      "the per-user default (~/.local/state/edge-tsm)")
    env.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert state_dir(cfg()) == tmp_path / "home/.local/state/edge-tsm"
    env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(cfg()) == tmp_path / "xdg/edge-tsm"
    env.setenv("STATE_DIRECTORY", f"{tmp_path}/systemd:{tmp_path}/second")
    assert locate_state_dir(None) == (tmp_path / "systemd", "systemd's StateDirectory ($STATE_DIRECTORY)")
    assert state_dir(cfg(str(tmp_path / "mine"))) == tmp_path / "mine"


def test_state_dir_without_any_home_is_a_config_error(env, monkeypatch):
    env.setenv("HOME", "")
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    with pytest.raises(ConfigError, match="state_dir: not set") as e:
        state_dir(cfg())
    assert e.value.exit_code == 78


def test_open_journal_says_where_and_seq_never_repeats_across_restarts(env, tmp_path, caplog):
    """No state_dir and no systemd: the per-user folder; two restarts never give a seq twice."""
    seen: list[int] = []
    for run in range(3):
        with caplog.at_level(logging.INFO, logger="edge.journal"):
            j = open_journal(cfg(fsync="always"))
        assert j.folder == tmp_path / "home/.local/state/edge-tsm/journal"
        assert f"journal {j.folder} (in the per-user default" in caplog.text
        seen += [j.append(ev(i)) for i in range(5 + run)]
        j.close()
    assert seen == list(range(1, len(seen) + 1))
    assert [e["seq"] for e in lines(Journal(tmp_path / "home/.local/state/edge-tsm/journal"))] == seen


@pytest.mark.parametrize("name, why", [
    ("file/state", "Not a directory"),
    ("x" * 5000, "File name too long"),
    ("nul\0here", "embedded null byte"),
    ("lone\ud800surrogate", "surrogates not allowed"),
])
def test_open_journal_in_a_folder_it_cannot_use_is_one_line(env, tmp_path, name, why):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError) as e:
        open_journal(cfg(str(tmp_path / name)))
    msg = str(e.value)
    assert e.value.exit_code == 66 and "\n" not in msg and len(msg) < 400, msg
    assert msg.startswith("journal ") and why in msg and "the config's state_dir" in msg, msg
    assert "\0" not in msg and "\ud800" not in msg  # printable, whatever the path holds


def test_a_folder_name_that_is_not_utf8_works(env, tmp_path):
    folder = Path(str(tmp_path / "caf") + "\udce9")  # the bytes b"caf\xe9" (Latin-1), as Python decodes them
    j = open_journal(cfg(str(folder)))
    appended(j, 1)
    j.close()
    assert (folder / "journal").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_open_journal_in_a_folder_without_write_permission(env, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(InputError, match="Permission denied") as e:
        open_journal(cfg(str(tmp_path / "ro" / "state")))
    assert e.value.exit_code == 66
