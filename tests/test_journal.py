"""The durable event journal: seq across restarts, torn-tail repair, segments and the size bound,
cursors, readers from memory and from disk, a full disk."""
from __future__ import annotations

import errno
import json
import threading

import pytest

import edge.journal as journal_mod
from edge.errors import InputError
from edge.journal import Journal


def _ev(i: int) -> dict:
    return {"v": 1, "event": "start", "id": f"cam-{i}", "camera": "cam", "label": "swipe_left", "score": 0.9,
            "ts": "2026-11-24T14:03:05.123Z", "start_ts": "2026-11-24T14:03:05.000Z", "frames": 3, "seq": 0}


def _lines(j: Journal) -> list[dict]:
    return [json.loads(x) for _, p in j.segments() for x in p.read_text().splitlines()]


def test_seq_continues_across_restarts(tmp_path):
    j = Journal(tmp_path, fsync="always")
    assert [j.append(_ev(i))["seq"] for i in range(3)] == [1, 2, 3]
    j.close()
    j = Journal(tmp_path)
    assert j.last_seq == 3 and j.append(_ev(3))["seq"] == 4
    j.close()
    assert [e["seq"] for e in _lines(Journal(tmp_path))] == [1, 2, 3, 4]


@pytest.mark.parametrize("tail", [b'{"v":1,"event":"start","seq":', b"\x00" * 300, b"\x00\x00\x00\n",
                                  b'{"seq": 9}\n{"garbled'])
def test_torn_tail_is_cut_at_open(tmp_path, tail, caplog):
    j = Journal(tmp_path)
    for i in range(5):
        j.append(_ev(i))
    j.close()
    seg = j.segments()[-1][1]
    good = seg.read_bytes()
    with open(seg, "ab") as f:
        f.write(tail)
    j = Journal(tmp_path)
    expect_last = 9 if tail.startswith(b'{"seq": 9}\n') else 5
    assert j.last_seq == expect_last and "torn or garbled" in caplog.text
    assert seg.read_bytes().startswith(good) and seg.read_bytes().endswith(b"\n")
    assert j.append(_ev(6))["seq"] == expect_last + 1


def test_segments_rotate_and_the_bound_removes_the_oldest(tmp_path):
    j = Journal(tmp_path, segment_bytes=4096, max_bytes=8192 * 2)
    for i in range(400):
        j.append(_ev(i))
    segs = j.segments()
    assert len(segs) >= 3 and j.stats.removed_segments > 0
    assert sum(p.stat().st_size for _, p in segs) <= 8192 * 2 + 4096
    seqs = [e["seq"] for e in _lines(j)]
    assert seqs == list(range(seqs[0], 401))  # contiguous up to the newest
    # a reader behind the removed segments skips them and counts the loss
    r = Journal(tmp_path, segment_bytes=4096, max_bytes=8192 * 2).reader(after_seq=0)
    first = r.next(timeout=1)
    assert first["seq"] == seqs[0] and r.lost == seqs[0] - 1


def test_reader_from_disk_after_restart_then_live_from_memory(tmp_path):
    j = Journal(tmp_path, segment_bytes=4096)
    for i in range(60):  # spans several segments
        j.append(_ev(i))
    j.close()
    j = Journal(tmp_path, segment_bytes=4096)
    r = j.reader(after_seq=10)
    got = [r.next(timeout=1)["seq"] for _ in range(50)]
    assert got == list(range(11, 61)) and r.lost == 0
    assert r.next(timeout=0.05) is None
    t = threading.Timer(0.1, lambda: j.append(_ev(60)))
    t.start()
    assert r.next(timeout=5)["seq"] == 61  # woken by the append
    t.join()


def test_cursors(tmp_path, caplog):
    j = Journal(tmp_path)
    assert j.cursor("serial") is None
    j.set_cursor("serial", 42)
    assert Journal(tmp_path).cursor("serial") == 42
    (tmp_path / "cursor-serial.json").write_text("{garbage")
    j.append(_ev(0))
    assert j.cursor("serial") == 0 and "unreadable" in caplog.text  # resumes from the oldest event


def test_disk_full_keeps_events_in_memory_and_reports(tmp_path, monkeypatch, caplog):
    j = Journal(tmp_path)
    j.append(_ev(0))
    r = j.reader(after_seq=1)
    real_write = journal_mod.os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "write", full)
    assert [j.append(_ev(i))["seq"] for i in (1, 2)] == [2, 3]  # no exception, seq goes on
    assert j.stats.failed == 2 and caplog.text.count("cannot append") == 1  # reported once (rate-limited)
    assert [r.next(timeout=1)["seq"] for _ in range(2)] == [2, 3]  # the sinks still get them
    monkeypatch.setattr(journal_mod.os, "write", real_write)
    assert j.append(_ev(3))["seq"] == 4
    j.close()
    assert [e["seq"] for e in _lines(Journal(tmp_path))] == [1, 4]  # 2 and 3 never reached the disk
    r = Journal(tmp_path).reader(after_seq=1)
    assert r.next(timeout=1)["seq"] == 4 and r.lost == 2


def test_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="journal .*file/journal: cannot create or write"):
        Journal(tmp_path / "file" / "journal")
