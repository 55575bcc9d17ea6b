"""Damaged state files are untrusted input (issue 15): what a power cut, a user's ``cp``/``mkfifo``/``mkdir``
or a planted symlink leaves in the journal folder never makes the journal trace back, hang, jump its seq, or
kill a durable sink's thread; what cannot be used is moved aside (``<name>.bad-<UTC time>``) with a warning.

The daemon-level runs (a real ``python -m edge run`` meeting these files at start) are in
tests/faults/test_state.py."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest
from test_journal import appended, ev, lines
from waiting import wait_until

from edge.journal import Journal
from edge.journal_reader import parse_line, record_seq
from edge.sinks import LogSinkConfig, create_sink


def journal_with(folder: Path, n: int, **kw) -> Journal:
    """A closed journal in ``folder`` holding seqs 1..n; returned closed (reopen to use)."""
    j = Journal(folder, fsync="always", **kw)
    appended(j, n)
    j.close()
    return j


def opened(folder: Path, **kw) -> Journal:
    """Open the journal in a thread: a FIFO that hung the open fails the test instead of hanging it."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(Journal(folder, **kw)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "opening the journal hung"
    assert out, "opening the journal raised (see the log)"
    return out[0]


def aside(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}.bad-*"))


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "true", "false", "null", "5.0", "0", "-3", '"7"', "[7]",
                                   "{}", "1000000000000", "9" * 5000], ids=lambda v: v[:20])
def test_a_seq_that_is_not_a_positive_int_is_not_a_record(value):
    assert parse_line(f'{{"v":1,"seq":{value}}}'.encode()) is None
    assert parse_line(b'{"v":1,"seq":7}') == {"v": 1, "seq": 7} and record_seq({"seq": 999_999_999_999})
    for junk in (b"\x00" * 40, b"[1,2]", b'"seq"', b"[" * 100_000, b"\xff\xfe", b""):
        assert parse_line(junk) is None


@pytest.mark.parametrize("last", [b'{"seq": 1e400}', b'{"seq": true}', b'{"seq": "6"}', b'{"seq": 3}', b"[6]"])
def test_a_bad_last_line_is_cut_and_kept_aside(tmp_path, last, caplog):
    journal_with(tmp_path, 5)
    seg = tmp_path / "events-000000000001.jsonl"
    good = seg.read_bytes()
    seg.write_bytes(good + last + b"\n")
    j = opened(tmp_path)
    assert j.last_seq == 5 and j.append(ev(5)) == 6  # from the last good record ({"seq": 3} would repeat 4 and 5)
    j.close()
    kept = [p for p in tmp_path.iterdir() if ".bad-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == last + b"\n", "the cut line is kept for a person to look at"
    assert seg.read_bytes().startswith(good) and [e["seq"] for e in lines(j)] == [1, 2, 3, 4, 5, 6]
    assert "torn or garbled" in caplog.text and "Traceback" not in caplog.text


def test_a_bad_line_mid_segment_is_skipped_by_a_durable_sink(tmp_path, caplog):
    """``{"seq": 1e400}`` between two records, behind a durable log sink's cursor: the sink's thread goes on and
    delivers every record after it (before: OverflowError in the reader killed the thread, the daemon went on)."""
    folder = tmp_path / "journal"
    journal_with(folder, 6)
    seg = folder / "events-000000000001.jsonl"
    rows = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(rows[:3] + [b'{"seq": 1e400}\n', b'{"v":1,"seq":true}\n', b"\x00" * 9 + b"\n"] + rows[3:]))
    j = Journal(folder)
    assert j.last_seq == 6 and not aside(folder, "events-000000000001.jsonl")  # mid-segment: left in place
    j.set_cursor("log", 2)
    out = tmp_path / "events.jsonl"
    sink = create_sink(LogSinkConfig(type="log", path=str(out), durable=True), "log")
    sink.attach_journal(j)
    sink.open()
    try:
        wait_until(lambda: sink.stats()["delivered"] >= 4, timeout=10, what="the records after the bad lines")
        assert j.append(ev(6)) == 7
        wait_until(lambda: sink.stats()["delivered"] >= 5, timeout=10, what="a live record after them")
    finally:
        sink.close(timeout=2)
        j.close()
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == [3, 4, 5, 6, 7]
    assert sink.stats()["crashes"] == 0 and j.cursor("log") == 7
    assert "is not a journal record; skipped" in caplog.text and "Traceback" not in caplog.text


def test_a_reader_skips_bad_lines_and_counts_them(tmp_path, caplog):
    journal_with(tmp_path, 4)
    seg = tmp_path / "events-000000000001.jsonl"
    rows = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(rows[:2] + [b'{"seq": 1e400}\n', b"x" * (3 << 20) + b"\n"] + rows[2:]))
    r = Journal(tmp_path).reader(after_seq=0)
    assert [r.next(timeout=1)["seq"] for _ in range(4)] == [1, 2, 3, 4]
    assert r.skipped == 2 and r.lost == 0 and r.next(timeout=0.05) is None  # the 3 MB line was never held whole
    assert caplog.text.count("is not a journal record; skipped") == 1  # rate-limited


@pytest.mark.parametrize("content", [b"hello, not a journal\n", b"\x00" * 5000, b"", b'{"seq": 1}\n{"seq": 2}\n'],
                         ids=["text", "nuls", "empty", "copy"])
def test_a_junk_segment_name_never_makes_seq_jump(tmp_path, content, caplog):
    """``events-999999999999.jsonl`` holding junk, nothing, or a copy of another segment: moved aside whole
    (before: truncated, and seq jumped to 10^12); seq goes on from the last good record."""
    journal_with(tmp_path, 3)
    junk = tmp_path / "events-999999999999.jsonl"
    junk.write_bytes(content)
    j = opened(tmp_path)
    assert j.last_seq == 3 and j.append(ev(3)) == 4
    j.close()
    kept = aside(tmp_path, junk.name)
    assert not junk.exists() and len(kept) == 1 and kept[0].read_bytes() == content  # moved, not truncated
    assert [e["seq"] for e in lines(Journal(tmp_path))] == [1, 2, 3, 4]
    assert "moved aside" in caplog.text


def test_an_older_segment_whose_first_record_disagrees_with_its_name_is_moved_aside(tmp_path, caplog):
    journal_with(tmp_path, 60, segment_bytes=4096)
    segs = Journal(tmp_path, segment_bytes=4096).segments()
    assert len(segs) >= 3
    copy = tmp_path / f"events-{segs[1][0] + 1:012d}.jsonl"  # a copy of the first segment, named in the middle
    copy.write_bytes(segs[0][1].read_bytes())
    j = Journal(tmp_path, segment_bytes=4096)
    assert not copy.exists() and aside(tmp_path, copy.name) and "disagrees with its name" in caplog.text
    r = j.reader(after_seq=0)
    assert [r.next(timeout=1)["seq"] for _ in range(60)] == list(range(1, 61)) and r.lost == 0
    j.close()


def test_an_empty_newest_segment_named_as_the_next_seq_is_kept(tmp_path):
    """What a disk that filled up right after a rotation leaves: an empty segment named last + 1. Kept (the
    writer continues it); one with any other name is moved aside."""
    journal_with(tmp_path, 3)
    (tmp_path / "events-000000000004.jsonl").write_bytes(b"")
    (tmp_path / "events-000000000009.jsonl").write_bytes(b"")
    j = Journal(tmp_path)
    assert j.last_seq == 3 and j.append(ev(3)) == 4
    j.close()
    assert (tmp_path / "events-000000000004.jsonl").read_bytes().count(b"\n") == 1
    assert aside(tmp_path, "events-000000000009.jsonl") and not (tmp_path / "events-000000000009.jsonl").exists()


def test_a_torn_first_line_of_the_next_segment_is_cut(tmp_path, caplog):
    """A power cut during the first write into a new segment: only a torn line in it; cut, the segment kept."""
    journal_with(tmp_path, 3)
    seg = tmp_path / "events-000000000004.jsonl"
    seg.write_bytes(b'{"v":1,"event":"start","se')
    j = Journal(tmp_path)
    assert j.last_seq == 3 and j.stats.repaired_bytes == 26 and "torn last line" in caplog.text
    assert j.append(ev(3)) == 4 and j.flush(5)
    j.close()
    assert [e["seq"] for e in lines(j)] == [1, 2, 3, 4] and not aside(tmp_path, seg.name)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()


def _folder(p: Path) -> None:
    p.mkdir()
    (p / "inside").write_text("x")


def _link(p: Path) -> None:
    os.symlink(p.parent.parent / "outside.jsonl", p)


@pytest.mark.parametrize("make", [_fifo, _socket, _folder, _link], ids=["fifo", "socket", "folder", "symlink"])
@pytest.mark.parametrize("name", ["events-000000000001.jsonl", "events-000000000004.jsonl"], ids=["only", "newest"])
def test_a_non_regular_file_named_like_a_segment_is_moved_aside_unopened(tmp_path, make, name, caplog):
    """Before: a folder -> IsADirectoryError on every start; a FIFO -> the start hung, deaf to SIGTERM."""
    folder = tmp_path / "journal"
    folder.mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b'{"seq": 500}\n')
    n = 3 if name.endswith("4.jsonl") else 0
    if n:
        journal_with(folder, n)
    make(folder / name)
    j = opened(folder)
    assert j.last_seq == n and j.append(ev(n)) == n + 1
    assert j.flush(5)
    j.close()
    assert len(aside(folder, name)) == 1 and "where a journal segment should be" in caplog.text
    assert outside.read_bytes() == b'{"seq": 500}\n'  # a link is never followed, for reading or writing
    assert [e["seq"] for e in lines(Journal(folder))] == list(range(1, n + 2))


def test_the_writer_never_writes_through_a_symlink_planted_at_a_segment_name(tmp_path, caplog):
    """A link planted after the open (recover moves those present at open aside) at the next segment's name:
    the write fails (reported, the events still committed for the sinks), the link's target is untouched.
    Links at both names: the two events may come in one batch (one segment, events-1) or in two (the writer
    opens a fresh segment named after the next seq, events-2, after a failed one)."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious\n")
    folder = tmp_path / "journal"
    j = Journal(folder)
    for seq in (1, 2):
        os.symlink(outside, folder / f"events-{seq:012d}.jsonl")
    assert appended(j, 2) == [1, 2]
    j.close()
    assert outside.read_bytes() == b"precious\n" and j.stats.failed == 2 and "cannot append" in caplog.text


@pytest.mark.parametrize("content", ["{garbage", '{"seq": 1e400}', '{"seq": -1}', '{"seq": true}', "[]",
                                     '{"seq": "3"}', "x" * 100_000], ids=lambda c: c[:20])
def test_a_junk_cursor_is_moved_aside_and_the_sink_resumes_from_the_oldest_event(tmp_path, content, caplog):
    j = Journal(tmp_path)
    appended(j, 5)
    (tmp_path / "cursor-log.json").write_text(content)
    assert j.cursor("log") == 0 and "cursor of sink log unreadable" in caplog.text
    assert len(aside(tmp_path, "cursor-log.json")) == 1 and not (tmp_path / "cursor-log.json").exists()
    j.set_cursor("log", 5)
    assert j.cursor("log") == 5
    j.close()


@pytest.mark.parametrize("make", [_fifo, _folder, _link], ids=["fifo", "folder", "symlink"])
def test_a_cursor_that_is_not_a_regular_file_is_never_opened(tmp_path, make, caplog):
    folder = tmp_path / "journal"
    j = Journal(folder)
    appended(j, 2)
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"seq": 2}')
    make(folder / "cursor-log.json")
    got: list = []
    t = threading.Thread(target=lambda: got.append(j.cursor("log")), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and got == [0]
    j.set_cursor("log", 2)  # a new regular file in its place
    assert j.cursor("log") == 2 and (folder / "cursor-log.json").is_file()
    assert not (folder / "cursor-log.json").is_symlink() and outside.read_text() == '{"seq": 2}'
    j.close()


def test_a_cursor_past_the_last_record_resumes_after_it(tmp_path, caplog):
    """The journal's tail was lost (a power cut with fsync: never) after a sink delivered it: the sink must
    not skip the new events that get those seqs again."""
    j = Journal(tmp_path)
    appended(j, 3)
    j.set_cursor("log", 40)
    assert j.cursor("log") == 3 and "past the last record" in caplog.text
    j.close()


def test_symlinks_at_the_cursor_and_probe_names_are_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("precious")
    folder = tmp_path / "journal"
    folder.mkdir()
    for name in ("cursor-log.json", ".probe", ".cursor-log.json.tmp", f".cursor-log.json.{os.getpid()}.tmp"):
        os.symlink(outside, folder / name)
    j = Journal(folder, fsync="always")  # the folder's write probe
    appended(j, 1)
    j.set_cursor("log", 1)  # replaces the link itself
    j.close()
    assert outside.read_text() == "precious" and j.cursor("log") == 1
    assert not (folder / "cursor-log.json").is_symlink()
