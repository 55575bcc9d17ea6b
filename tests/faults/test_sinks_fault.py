"""Fault injection for the log sink's file against a real daemon subprocess: the file is deleted (``rm``),
then moved away (logrotate without copytruncate), then copied and truncated (logrotate's copytruncate)
while events keep coming. What the files on disk hold is compared with the journal. Same FAULT summary
line as test_faults.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time

from test_faults import (
    Daemon,
    assets,  # noqa: F401 - the module-scoped fixture (tiny bundle, colour video)
    base_cfg,
    check_once_in_order,
    journal_seqs,
    log_lines,
    report,
    seqs_of,
    stopped,
)
from waiting import wait_until


def test_log_file_deleted_moved_and_copytruncated_loses_nothing(assets, tmp_path):  # noqa: F811
    log, rotated, copied = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1", tmp_path / "events.jsonl.2"
    status = tmp_path / "state" / "status.json"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}])
    d = Daemon(tmp_path, {**cfg, "metrics": {"interval_s": 0.5}})

    def seqs(path=log) -> list[int]:
        return seqs_of(log_lines(path))

    def reopened() -> int | None:
        try:
            return json.loads(status.read_text())["sinks"]["log"].get("reopened")
        except (OSError, ValueError, KeyError):
            return None
    d.start()
    try:
        # 1. rm: the sink holds a deleted file; the new file gets what the lost one held, then the rest
        held = d.wait(lambda: (s := seqs()) and len(s) >= 6 and s)
        log.unlink()
        t0 = time.monotonic()
        d.wait(lambda: len(seqs()) >= len(held), what="the deleted file's events written again")
        recovery = time.monotonic() - t0
        d.wait(lambda: len(seqs()) >= len(held) + 4, what="new events after the rewrite")
        assert seqs()[:len(held)] == held  # the new file starts with what the deleted one held
        # 2. mv (logrotate without copytruncate): the moved file is whole, a new one goes on
        log.rename(rotated)
        d.wait(lambda: len(seqs()) >= 4, what="new events in a new file after the move")
        # 3. copytruncate, with the daemon frozen for it: a line written between the copy and the cut is
        #    logrotate's own documented race, not what this measures
        d.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: stopped(d.proc.pid), timeout=5, what="daemon stopped by SIGSTOP")
            shutil.copyfile(log, copied)
            os.truncate(log, 0)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        d.wait(lambda: len(seqs()) >= 4, what="new events in the truncated file")
        d.wait(lambda: reopened() == 2, what="status.json: the log sink reopened twice (rm, mv; not copytruncate)")
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0
    want = journal_seqs(tmp_path / "state")
    got = seqs(rotated) + seqs(copied) + seqs(log)   # the files in the order they were written
    dups, lost = check_once_in_order(got, want)
    report("log file deleted (rm), moved away (mv), copytruncated, while running", 3, len(want), {"log": len(got)},
           dups, lost, recovery)
    assert want == list(range(1, len(want) + 1)) and got == want  # every event once, in order, from seq 1
    assert d.stderr.count("the file was deleted or replaced while open") == 1
    assert d.stderr.count("the file was moved away") == 1
    assert "Traceback" not in d.stderr
