"""The state folder against real daemons (``python -m edge run``), issue 15: one owner per folder, damaged
journal files met at start, symlinks planted where the daemon writes.

Each test compares what the log sink received with the journal (every event once, in order, seq continuous)
and prints a FAULT line like tests/faults/test_faults.py.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from test_faults import Daemon, assets, base_cfg, check_once_in_order, journal_seqs, log_lines, report, seqs_of

__all__ = ["assets"]  # the module-scoped fixture, shared with test_faults


def run_until(d: Daemon, log: Path, more: int) -> None:
    n = len(log_lines(log))
    d.wait(lambda: len(log_lines(log)) >= n + more, timeout=60, what=f"{more} more events in the log")


def test_a_second_daemon_on_the_same_state_folder_exits_75_and_the_first_goes_on(assets, tmp_path):
    """Before: two daemons on one state_dir wrote one journal: 98 seq values belonged to two events."""
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}])
    first = Daemon(tmp_path, cfg)
    first.start()
    try:
        run_until(first, log, 3)
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(first.path)],
                                capture_output=True, text=True, timeout=60)
        refused_s = time.monotonic() - t0
        state = tmp_path / "state"
        errors = [x for x in second.stderr.splitlines() if x.startswith("edge-tsm: error:")]
        assert second.returncode == 75, second.stderr
        assert errors == [f"edge-tsm: error: state folder {state} is in use by another edge-tsm (PID "
                          f"{first.proc.pid}): one process per state folder; stop that one first, or give this one "
                          "its own state_dir"], second.stderr
        assert "Traceback" not in second.stderr
        # check beside the running daemon: passes, says it only read the journal, changes nothing there
        before = sorted(p.name for p in (state / "journal").iterdir())
        checked = subprocess.run([sys.executable, "-m", "edge", "check", "--config", str(first.path)],
                                 capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stderr
        assert f"in use by another edge-tsm (PID {first.proc.pid}" in checked.stderr
        assert "does not open it for writing" in checked.stderr
        assert sorted(p.name for p in (state / "journal").iterdir()) == before
        run_until(first, log, 3)  # the first goes on, untouched
        code, _ = first.stop()
    finally:
        first.kill()
    assert code == 0
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    assert want == list(range(1, len(want) + 1))  # no seq given twice
    dups, lost = check_once_in_order(got, want)
    report("a second daemon on the same state folder (exit 75) and a check beside it", 2, len(want),
           {"log": len(got)}, dups, lost, refused_s)
    assert (dups, lost) == (0, 0)


def _damage(journal: Path, outside: Path) -> list[str]:
    """What a user's mkdir/mkfifo/cp, a socket and a bad last line leave in ``journal``; the names planted."""
    (journal / "events-999999999999.jsonl").mkdir()
    os.mkfifo(journal / "events-999999999998.jsonl")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(journal / "events-999999999997.jsonl"))
    s.close()
    os.symlink(outside, journal / "events-999999999996.jsonl")
    (journal / "events-999999999995.jsonl").write_bytes(b"junk, not a journal\n" * 10)
    seg = sorted(journal.glob("events-000*.jsonl"))[-1]
    with open(seg, "ab") as f:
        f.write(b'{"v":1,"seq":1e400}\n')  # before: OverflowError at every start
    return [f"events-99999999999{i}.jsonl" for i in range(5, 10)]


def test_damaged_journal_files_at_start_are_moved_aside_and_seq_goes_on(assets, tmp_path):
    """A folder, a FIFO (before: the start hung, deaf to SIGTERM), a socket and a symlink named like segments,
    a junk segment named 999999999995 (before: truncated, seq jumped to 10^12), and a last line
    ``{"seq": 1e400}``: the daemon starts, says what it moved aside, and seq continues from the last record."""
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}])
    d = Daemon(tmp_path, cfg)
    d.start()
    try:
        run_until(d, log, 3)
        assert d.stop()[0] == 0
        journal = tmp_path / "state" / "journal"
        last = journal_seqs(tmp_path / "state")[-1]
        outside = tmp_path / "outside.jsonl"
        outside.write_bytes(b'{"seq": 900}\n')
        planted = _damage(journal, outside)
        t0 = time.monotonic()
        d.start()
        d.wait(lambda: d.err.has(f"last seq {last}"), timeout=60, what="the journal open with the last good seq")
        started_s = time.monotonic() - t0
        run_until(d, log, 3)
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0 and "Traceback" not in d.stderr
    for name in planted:
        assert not os.path.lexists(journal / name) and list(journal.glob(f"{name}.bad-*")), name
    assert outside.read_bytes() == b'{"seq": 900}\n'
    assert d.stderr.count("moved aside") >= len(planted) and "torn or garbled" in d.stderr
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    assert want == list(range(1, len(want) + 1)) and want[-1] < 10**6  # continuous, no jump
    dups, lost = check_once_in_order(got, want)
    report("damaged journal files at start (folder, FIFO, socket, symlink, junk segment, 1e400)", 6, len(want),
           {"log": len(got)}, dups, lost, started_s)
    assert (dups, lost) == (0, 0)


def test_symlinks_planted_in_the_state_folder_are_never_written_through(assets, tmp_path):
    """status.json, a cursor file, a probe name and a segment name made symlinks to files outside: the daemon
    replaces or moves the links, never writes (or truncates) their targets; a symlink at the lock file is one
    line, exit 65."""
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}])
    cfg["metrics"] = {"interval_s": 0.5}
    d = Daemon(tmp_path, cfg)
    d.start()
    try:
        run_until(d, log, 2)
        assert d.stop()[0] == 0
        state = tmp_path / "state"
        targets = {}
        for name in ("status.json", "journal/cursor-log.json", "journal/.probe", ".probe",
                     "journal/events-999999999999.jsonl"):
            target = tmp_path / ("outside-" + name.replace("/", "-"))
            target.write_text("precious " + name)
            (state / name).unlink(missing_ok=True)
            os.symlink(target, state / name)
            targets[target] = target.read_text()
        d.start()
        d.wait(lambda: not (state / "status.json").is_symlink(), what="status.json written (the link replaced)")
        run_until(d, log, 2)
        code, _ = d.stop()
        assert code == 0 and "Traceback" not in d.stderr
        assert {t: t.read_text() for t in targets} == targets  # no target written, none truncated
        assert not (state / "journal" / "cursor-log.json").is_symlink()
        got, want = seqs_of(log_lines(log)), journal_seqs(state)
        dups, lost = check_once_in_order(got, want)
        assert (dups, lost) == (0, 0)
        # a symlink at the lock file: refused, one line, its target untouched
        lock_target = tmp_path / "outside-lock"
        lock_target.write_text("precious lock")
        (state / "lock").unlink()
        os.symlink(lock_target, state / "lock")
        refused = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(d.path)],
                                 capture_output=True, text=True, timeout=60)
    finally:
        d.kill()
    assert refused.returncode == 65 and "Traceback" not in refused.stderr
    assert f"state folder {state}: its lock file lock is a symbolic link" in refused.stderr, refused.stderr
    assert lock_target.read_text() == "precious lock"
    report("symlinks planted at status.json, a cursor, the probe and a segment name", 5, len(want),
           {"log": len(got)}, dups, lost, 0.0)


def test_a_fifo_in_the_journal_never_hangs_a_start_or_sigterm(assets, tmp_path):
    """The daemon meets a FIFO named like the newest segment and nothing else: it starts (the FIFO moved aside
    unopened) and SIGTERM stops it at once."""
    log = tmp_path / "events.jsonl"
    journal = tmp_path / "state" / "journal"
    journal.mkdir(parents=True)
    os.mkfifo(journal / "events-000000000001.jsonl")
    d = Daemon(tmp_path, base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}]))
    d.start()
    try:
        run_until(d, log, 2)
        code, took = d.stop(signal.SIGTERM)
    finally:
        d.kill()
    assert code == 0 and took < 10 and "a FIFO where a journal segment should be" in d.stderr
    assert seqs_of(log_lines(log)) == journal_seqs(tmp_path / "state") == list(range(1, len(log_lines(log)) + 1))
