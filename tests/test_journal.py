"""The durable event journal: seq across restarts, torn-tail repair, segments and the size bound, cursors,
readers from memory and from disk, a full disk. The writer thread (group commit, commit before readers and
subscribers) and the state folder are in test_journal_writer.py."""
from __future__ import annotations

import errno
import json
import threading

import pytest

import edge.journal as journal_mod
from edge.errors import InputError
from edge.events import Event
from edge.journal import Journal


def ev(i: int) -> Event:
    return Event(kind="start", id=f"cam-{i}", camera="cam", label="swipe_left", score=0.9, ts=1_800_000_000.0 + i,
                 start_ts=1_800_000_000.0 + i - 0.1, frames=3)


def lines(j: Journal) -> list[dict]:
    return [json.loads(x) for _, p in j.segments() for x in p.read_text().splitlines()]


def appended(j: Journal, n: int, start: int = 0) -> list[int]:
    """Append ``n`` events, wait until they are committed; their seqs."""
    seqs = [j.append(ev(i)) for i in range(start, start + n)]
    assert j.flush(5)
    return seqs


def test_seq_continues_across_restarts(tmp_path):
    j = Journal(tmp_path, fsync="always")
    assert appended(j, 3) == [1, 2, 3]
    j.close()
    j = Journal(tmp_path)
    assert j.last_seq == j.appended_seq == 3 and j.append(ev(3)) == 4
    j.close()
    got = lines(Journal(tmp_path))
    assert [e["seq"] for e in got] == [1, 2, 3, 4]
    assert got[0] == ev(0).record(1)  # the schema record, made once, is what is on disk


@pytest.mark.parametrize("tail", [b'{"v":1,"event":"start","seq":', b"\x00" * 300, b"\x00\x00\x00\n",
                                  b'{"seq": 9}\n{"garbled'])
def test_torn_tail_is_cut_at_open(tmp_path, tail, caplog):
    j = Journal(tmp_path)
    appended(j, 5)
    j.close()
    seg = j.segments()[-1][1]
    good = seg.read_bytes()
    with open(seg, "ab") as f:
        f.write(tail)
    j = Journal(tmp_path)
    expect_last = 9 if tail.startswith(b'{"seq": 9}\n') else 5
    assert j.last_seq == expect_last and "torn or garbled" in caplog.text and j.stats.repaired_bytes > 0
    assert seg.read_bytes().startswith(good) and seg.read_bytes().endswith(b"\n")
    assert j.append(ev(6)) == expect_last + 1
    j.close()


def test_segments_rotate_and_the_bound_removes_the_oldest(tmp_path):
    j = Journal(tmp_path, segment_bytes=4096, max_bytes=8192 * 2)
    for i in range(400):
        j.append(ev(i))
        if i % 7 == 0:  # batches of different sizes, some across a segment boundary
            assert j.flush(5)
    j.close()
    segs = j.segments()
    assert len(segs) >= 3 and j.stats.removed_segments > 0 and j.stats.appended == 400
    assert sum(p.stat().st_size for _, p in segs) <= 8192 * 2 + 4096
    seqs = [e["seq"] for e in lines(j)]
    assert seqs == list(range(seqs[0], 401))  # contiguous up to the newest
    for first, p in segs:  # each segment is named by its first seq
        assert json.loads(p.read_text().splitlines()[0])["seq"] == first
    # a reader behind the removed segments skips them and counts the loss
    r = Journal(tmp_path, segment_bytes=4096, max_bytes=8192 * 2).reader(after_seq=0)
    first = r.next(timeout=1)
    assert first["seq"] == seqs[0] and r.lost == seqs[0] - 1


def test_reader_from_disk_after_restart_then_live_from_memory(tmp_path):
    j = Journal(tmp_path, segment_bytes=4096)
    appended(j, 60)  # spans several segments
    j.close()
    j = Journal(tmp_path, segment_bytes=4096)
    r = j.reader(after_seq=10)
    got = [r.next(timeout=1)["seq"] for _ in range(50)]
    assert got == list(range(11, 61)) and r.lost == 0
    assert r.next(timeout=0.05) is None
    t = threading.Timer(0.1, lambda: j.append(ev(60)))
    t.start()
    assert r.next(timeout=5)["seq"] == 61  # woken by the commit
    t.join()
    j.close()


def test_reader_from_disk_stops_where_memory_starts(tmp_path):
    """Records older than memory come from the segments, the rest from memory: no gap, no repeat."""
    j = Journal(tmp_path, memory_events=16)
    appended(j, 100)
    r = j.reader(after_seq=3)
    assert [r.next(timeout=1)["seq"] for _ in range(97)] == list(range(4, 101)) and r.lost == 0
    j.close()


def test_cursors(tmp_path, caplog):
    j = Journal(tmp_path, fsync="always")
    assert j.cursor("serial") is None
    appended(j, 50)
    j.set_cursor("serial", 42)
    j.close()
    assert Journal(tmp_path).cursor("serial") == 42
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    (tmp_path / "cursor-serial.json").write_text("{garbage")
    j = Journal(tmp_path)
    assert j.cursor("serial") == 0 and "unreadable" in caplog.text  # resumes from the oldest event
    aside = [p.name for p in tmp_path.glob("cursor-serial.json.bad-*")]
    assert len(aside) == 1 and not (tmp_path / "cursor-serial.json").exists()  # moved aside, kept for a person
    j.close()


def full_disk(monkeypatch, j: Journal) -> None:
    """Writes to ``j``'s segment fail with ENOSPC (other file descriptors are left alone)."""
    real_write = journal_mod.os.write

    def write(fd, data):
        if fd == j._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(journal_mod.os, "write", write)


def test_disk_full_still_commits_and_delivers_then_retries(tmp_path, monkeypatch, caplog):
    j = Journal(tmp_path)
    appended(j, 1)
    r = j.reader(after_seq=1)
    got: list[int] = []
    j.subscribe(lambda records: got.extend(x["seq"] for x in records))
    full_disk(monkeypatch, j)
    assert appended(j, 1, 1) == [2] and appended(j, 1, 2) == [3]  # two batches, no exception, seq goes on
    assert j.stats.failed == 2 and caplog.text.count("cannot append") == 1  # reported once (rate-limited)
    assert [r.next(timeout=1)["seq"] for _ in range(2)] == [2, 3] and got == [2, 3]  # the sinks still get them
    monkeypatch.undo()
    assert appended(j, 1, 3) == [4]  # the next batch tries the disk again
    j.close()
    assert [e["seq"] for e in lines(Journal(tmp_path))] == [1, 4]  # 2 and 3 never reached the disk
    r = Journal(tmp_path).reader(after_seq=1)
    assert r.next(timeout=1)["seq"] == 4 and r.lost == 2


def test_short_write_is_taken_back(tmp_path, monkeypatch):
    """A write that stops half-way (the disk filled up during it) leaves the segment line-whole."""
    j = Journal(tmp_path)
    appended(j, 2)
    real_write = journal_mod.os.write
    monkeypatch.setattr(journal_mod.os, "write",
                        lambda fd, data: real_write(fd, data[:7]) if fd == j._fd else real_write(fd, data))
    appended(j, 3, 2)
    monkeypatch.undo()
    appended(j, 1, 5)
    j.close()
    assert [e["seq"] for e in lines(j)] == [1, 2, 6] and j.stats.failed == 3


def test_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="journal .*file/journal: cannot create or write") as e:
        Journal(tmp_path / "file" / "journal")
    assert e.value.exit_code == 66 and "\n" not in str(e.value)


def test_an_unexpected_error_in_the_writer_does_not_stop_it(tmp_path, monkeypatch, caplog):
    j = Journal(tmp_path)
    appended(j, 1)
    real_write = journal_mod.os.write
    monkeypatch.setattr(journal_mod.os, "write",
                        lambda fd, data: 1 / 0 if fd == j._fd else real_write(fd, data))
    assert appended(j, 1, 1) == [2]  # committed all the same (the sinks get it), reported with its traceback
    assert j.stats.failed == 1 and "ZeroDivisionError" in caplog.text
    monkeypatch.undo()
    assert appended(j, 1, 2) == [3]
    j.close()
    assert [e["seq"] for e in lines(j)] == [1, 3]
