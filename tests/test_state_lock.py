"""One owner per state folder (issue 15): the journal's open takes an exclusive flock on ``<state>/lock`` and
writes its PID there; a second opener gets one line naming the folder and that PID (exit 75), ``check`` beside
a running owner only reads the journal. Two real daemons on one folder: tests/faults/test_state.py."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest
from test_journal import appended

from edge.config import Config
from edge.errors import EX_TEMPFAIL, BusyError, StateError
from edge.journal import Journal, MemoryJournal, open_journal
from edge.state import LOCK_FILE, holder, lock_state_dir


def cfg(folder) -> Config:
    return Config.model_validate({"state_dir": str(folder), "cameras": [{"name": "c", "source": "x.avi"}],
                                  "journal": {"fsync": "always"}})


def test_a_second_owner_is_refused_with_the_folder_and_the_pid(tmp_path):
    first = lock_state_dir(tmp_path)
    assert holder(tmp_path) == os.getpid() and (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(BusyError) as e:
        lock_state_dir(tmp_path)  # flock is per open file: the same process is refused too
    msg = str(e.value)
    assert e.value.exit_code == EX_TEMPFAIL == 75 and "\n" not in msg
    assert f"state folder {tmp_path} is in use" in msg and f"PID {os.getpid()}" in msg, msg
    first.release()
    first.release()  # idempotent
    assert holder(tmp_path) is None  # the PID goes with the lock
    lock_state_dir(tmp_path).release()


def test_the_lock_is_refused_to_another_process_and_freed_when_its_holder_dies(tmp_path):
    code = ("import sys, time; from pathlib import Path; from edge.state import lock_state_dir; "
            "lock_state_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "locked\n"
        with pytest.raises(BusyError, match=f"PID {p.pid}"):
            lock_state_dir(tmp_path)
    finally:
        p.kill()
        p.wait()
    lock_state_dir(tmp_path).release()  # the kernel released it with the process


def test_open_journal_holds_the_lock_until_close(tmp_path):
    j = open_journal(cfg(tmp_path))
    with pytest.raises(BusyError, match="in use by another edge-tsm"):
        open_journal(cfg(tmp_path))
    j.append({"event": "start"})
    j.close()
    j = open_journal(cfg(tmp_path))
    assert j.last_seq == 1
    j.close()


def test_check_beside_a_running_owner_reads_the_journal_and_changes_nothing(tmp_path, caplog):
    j = open_journal(cfg(tmp_path))
    appended(j, 3)
    seg = tmp_path / "journal" / "events-000000000001.jsonl"
    with open(seg, "ab") as f:  # a torn tail the owner has not repaired: check must not touch it either
        f.write(b'{"v":1,"se')
    before = {p.name: p.read_bytes() for p in (tmp_path / "journal").iterdir()}
    with caplog.at_level(logging.WARNING):
        peek = open_journal(cfg(tmp_path), check=True)
    assert isinstance(peek, MemoryJournal) and peek.last_seq == 3
    assert f"state folder {tmp_path} is in use by another edge-tsm (PID {os.getpid()}" in caplog.text
    assert "does not open it for writing" in caplog.text
    assert {p.name: p.read_bytes() for p in (tmp_path / "journal").iterdir()} == before
    j.close()
    checked = open_journal(cfg(tmp_path), check=True)  # free: check takes the lock as run would
    assert isinstance(checked, Journal) and checked.last_seq == 3
    with pytest.raises(BusyError):
        open_journal(cfg(tmp_path))
    checked.close()


def _link(p):
    os.symlink(p.parent / "outside", p)


def _fifo(p):
    os.mkfifo(p)


def _folder(p):
    p.mkdir()


@pytest.mark.parametrize("make", [_link, _fifo, _folder], ids=["symlink", "fifo", "folder"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_unopened(tmp_path, make):
    (tmp_path / "outside").write_text("precious")
    make(tmp_path / LOCK_FILE)
    out: list = []

    def take():
        try:
            lock_state_dir(tmp_path)
        except StateError as e:
            out.append(e)
    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and out, "the lock hung or was taken"
    msg = str(out[0])
    assert out[0].exit_code == 65 and "\n" not in msg and f"its lock file {LOCK_FILE} is a" in msg, msg
    assert (tmp_path / "outside").read_text() == "precious"
