"""Fault injection against a real daemon subprocess (``python -m edge run``), real files, real ptys.

Each test injects a fault for real (SIGKILL, a pty master closed like a USB unplug and a new pty
behind the same symlink like udev's by-id link, SIGTERM while a sink is down, a video file that
vanishes and comes back, a file-size limit that makes the journal's disk "full") and then compares
what every sink received with the journal: every event exactly once, in order, ``seq`` continuous.
A one-line summary per fault goes to stdout (``pytest -s`` shows the table for the closing note).
"""
from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import Follow, wait_until

FAST_EVENTS = {"window": 1, "enter": 0.5, "exit": 0.5, "min_frames": 1, "cooldown_s": 0}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return build_tiny_bundle(root / "tiny"), write_colour_video(root / "colours.avi")


def seqs_of(lines: list[bytes | str]) -> list[int]:
    """The seqs of whole JSON lines (a line cut by an unplug is not an event: it is sent again)."""
    out = []
    for x in lines:
        try:
            out.append(json.loads(x)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T in /proc): SIGSTOP has taken effect."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
    return bool(states) and all(s in ("T", "t") for s in states)


def unplug(d: Daemon, master: int, slave: int, buf: bytearray) -> None:
    """Pull the adapter at an idle moment: freeze the daemon, read what the line already carries, close
    both ends, thaw. (Bytes still in a tty buffer when a real adapter is pulled are lost on the wire; no
    sink can know. That physical limit is not what these tests measure.)"""
    d.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: stopped(d.proc.pid), timeout=5, what=f"daemon {d.proc.pid} stopped by SIGSTOP")
        _read_pty(master, buf, timeout=0.2)
        os.close(master)
        os.close(slave)
    finally:
        d.proc.send_signal(signal.SIGCONT)


def journal_seqs(state: Path) -> list[int]:
    out = []
    for p in sorted((state / "journal").glob("events-*.jsonl")):
        out += seqs_of(p.read_text().splitlines())
    return out


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def report(fault: str, injected: int, produced: int, delivered: dict[str, int], dups: int, lost: int,
           recovery_s: float) -> None:
    print(f"\nFAULT | {fault} | injected {injected} | produced {produced} | delivered "
          + ", ".join(f"{k} {v}" for k, v in delivered.items()) + f" | duplicates {dups} | lost {lost} | "
          f"recovery {recovery_s:.2f} s")


def check_once_in_order(got: list[int], want: list[int]) -> tuple[int, int]:
    """(duplicates, losses) of ``got`` against ``want``; also asserts order."""
    assert got == sorted(got), "out of order"
    dups = len(got) - len(set(got))
    lost = len(set(want) - set(got))
    return dups, lost


class Daemon:
    """``python -m edge run`` on a config written from ``cfg``; its stderr is read as it comes (``stderr``
    holds every start's), so a test can wait on a log line."""

    def __init__(self, tmp: Path, cfg: dict, preexec=None) -> None:
        self.path = tmp / "config.yaml"
        self.path.write_text(yaml.safe_dump(cfg))
        self.preexec = preexec
        self.proc: subprocess.Popen | None = None
        self.err: Follow | None = None
        self.past = ""  # the stderr of earlier starts

    @property
    def stderr(self) -> str:
        return self.past + (self.err.text if self.err is not None else "")

    def start(self) -> None:
        if self.err is not None:
            self.past, self.err = self.stderr, None
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(self.path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=self.preexec)
        self.err = Follow(self.proc.stderr)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, pred, timeout: float = 30.0, what: str | None = None):
        """``wait_until`` that fails at once, with the daemon's stderr, if the daemon exits first."""
        return wait_until(pred, timeout=timeout, what=what, proc=self.proc, output=lambda: self.stderr)

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        took = time.monotonic() - t0
        self.err.join()
        return self.proc.returncode, took

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.err.join()


def base_cfg(assets, tmp: Path, realtime: bool, sinks: list[dict]) -> dict:
    bundle, video = assets
    return {"model": str(bundle), "state_dir": str(tmp / "state"), "status_interval_s": 0, "events": FAST_EVENTS,
            "cameras": [{"name": "loop", "source": str(video), "loop": True, "realtime": realtime}], "sinks": sinks}


def test_sigkill_during_heavy_output_then_restart(assets, tmp_path):
    log = tmp_path / "events.jsonl"
    d = Daemon(tmp_path, base_cfg(assets, tmp_path, False, [{"type": "log", "path": str(log)}]))
    kills = 3
    for _ in range(kills):  # killed mid-stream, three times
        d.start()
        n = len(log_lines(log))
        d.wait(lambda n=n: len(log_lines(log)) >= n + 150)
        d.kill()
    d.start()
    n = len(log_lines(log))
    t_start = time.monotonic()
    d.wait(lambda: len(log_lines(log)) >= n + 50)
    recovery = time.monotonic() - t_start
    code, _ = d.stop()
    assert code == 0
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    assert want == list(range(1, len(want) + 1))  # the journal's seq is continuous across the kills
    dups, lost = check_once_in_order(got, want)
    report("SIGKILL during heavy output, restart", kills, len(want), {"log": len(got)}, dups, lost, recovery)
    assert (dups, lost) == (0, 0) and got == want


def _read_pty(master: int, buf: bytearray, timeout: float = 0.05, budget_s: float = 0.5) -> None:
    """Read what the line carries until it is quiet for ``timeout`` or ``budget_s`` has passed (a daemon
    writing without pause must not keep the caller here forever)."""
    end = time.monotonic() + budget_s
    while time.monotonic() < end and select.select([master], [], [], timeout)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        buf += data


def test_serial_unplug_and_replug_behind_a_symlink(assets, tmp_path):
    import tty
    link = tmp_path / "ttyUSB-by-id"
    m1, s1 = os.openpty()
    tty.setraw(s1)
    os.symlink(os.ttyname(s1), link)
    log = tmp_path / "events.jsonl"
    d = Daemon(tmp_path, base_cfg(assets, tmp_path, True, [
        {"type": "serial", "port": str(link), "format": "json", "reconnect": {"initial_s": 0.1, "max_s": 0.5}},
        {"type": "log", "path": str(log)}]))
    d.start()
    first = bytearray()
    try:
        d.wait(lambda: (_read_pty(m1, first), first.count(b"\n") >= 4)[1])
        unplug(d, m1, s1, first)
        n = len(log_lines(log))
        d.wait(lambda: len(log_lines(log)) >= n + 4)  # events go on while the port is away
        m2, s2 = os.openpty()
        tty.setraw(s2)
        os.symlink(os.ttyname(s2), tmp_path / "new-link")
        os.replace(tmp_path / "new-link", link)  # replug: udev points the by-id link at the new device
        t_replug = time.monotonic()
        second = bytearray()
        d.wait(lambda: (_read_pty(m2, second), second.count(b"\n") >= 6)[1])
        recovery = time.monotonic() - t_replug
        code, _ = d.stop()
        _read_pty(m2, second, timeout=0.3)
        os.close(m2)
        os.close(s2)
    finally:
        d.kill()
    assert code == 0
    got = seqs_of(bytes(first).splitlines()) + seqs_of(bytes(second).splitlines())
    want = journal_seqs(tmp_path / "state")
    dups, lost = check_once_in_order(got, want)
    report("serial unplug (pty master closed) + replug (new pty behind the symlink)", 1, len(want),
           {"serial": len(got), "log": len(log_lines(log))}, dups, lost, recovery)
    assert (dups, lost) == (0, 0) and seqs_of(log_lines(log)) == want


def test_sigterm_with_a_sink_down_exits_fast_and_loses_nothing(assets, tmp_path):
    import tty
    link = tmp_path / "ttyACM-by-id"
    cfg = base_cfg(assets, tmp_path, False, [{"type": "serial", "port": str(link), "format": "json",
                                               "reconnect": {"initial_s": 0.05, "max_s": 0.2}}])
    m1, s1 = os.openpty()
    tty.setraw(s1)
    os.symlink(os.ttyname(s1), link)
    d = Daemon(tmp_path, cfg)
    d.start()
    buf = bytearray()
    d.wait(lambda: (_read_pty(m1, buf), buf.count(b"\n") >= 2)[1])
    unplug(d, m1, s1, buf)  # the port goes away; the journal keeps filling
    first_n = len(seqs_of(bytes(buf).splitlines()))
    d.wait(lambda: sum(p.read_bytes().count(b"\n") for p in (tmp_path / "state" / "journal").glob("events-*"))
           >= first_n + 300)
    code, took = d.stop()
    assert code == 0 and took < 2.0, (code, took)
    m2, s2 = os.openpty()
    tty.setraw(s2)
    os.symlink(os.ttyname(s2), tmp_path / "new-link")
    os.replace(tmp_path / "new-link", link)
    cfg["cameras"][0]["loop"] = False  # the restart replays the backlog, then the file ends
    d2 = Daemon(tmp_path, cfg)
    d2.start()
    second = bytearray()
    want = journal_seqs(tmp_path / "state")
    try:
        t_start = time.monotonic()
        d2.wait(lambda: (_read_pty(m2, second), len(seqs_of(bytes(second).splitlines())) >= 1 and
                         seqs_of(bytes(second).splitlines())[-1] >= want[-1])[1], timeout=60)
        recovery = time.monotonic() - t_start
        d2.proc.wait(timeout=30)
        _read_pty(m2, second, timeout=0.3)
    finally:
        d2.kill()
        os.close(m2)
        os.close(s2)
    got = [s for s in seqs_of(bytes(buf).splitlines()) + seqs_of(bytes(second).splitlines())]
    want = journal_seqs(tmp_path / "state")
    dups, lost = check_once_in_order(got, want)
    report(f"SIGTERM with the serial sink down ({len(want) - len(seqs_of(bytes(buf).splitlines()))} queued), "
           f"exit in {took:.2f} s, restart", 1, len(want), {"serial": len(got)}, dups, lost, recovery)
    assert (dups, lost) == (0, 0)


def test_file_source_vanishes_and_comes_back(assets, tmp_path):
    bundle, video = assets
    clip = tmp_path / "clip.avi"
    shutil.copy(video, clip)
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}])
    cfg["cameras"][0].update(source=str(clip), reconnect={"initial_s": 0.1, "max_s": 0.4})
    cfg["cameras"].append({"name": "steady", "source": str(video), "loop": True, "realtime": True})
    d = Daemon(tmp_path, cfg)
    d.start()

    def from_cam(cam: str) -> int:
        return sum(json.loads(x)["camera"] == cam for x in log_lines(log))
    try:
        d.wait(lambda: from_cam("loop") >= 2)
        os.replace(clip, tmp_path / "away.avi")  # gone at the next loop
        d.wait(lambda: d.err.has("reconnect"))
        steady = from_cam("steady")
        d.wait(lambda: from_cam("steady") >= steady + 2)  # the other camera is unaffected
        n = len(log_lines(log))
        os.replace(tmp_path / "away.avi", clip)
        t_back = time.monotonic()
        d.wait(lambda: len(log_lines(log)) >= n + 2)
        recovery = time.monotonic() - t_back
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    dups, lost = check_once_in_order(got, want)
    report("file source vanishes, comes back", 1, len(want), {"log": len(got)}, dups, lost, recovery)
    assert (dups, lost) == (0, 0)


def test_journal_disk_full_is_reported_not_fatal(assets, tmp_path):
    log = tmp_path / "events.jsonl"
    limit = 40_000  # RLIMIT_FSIZE: writes past 40 kB fail with EFBIG, like a full disk (Python ignores SIGXFSZ)
    cfg = base_cfg(assets, tmp_path, False, [{"type": "stdout"}, {"type": "log", "path": str(log)}])
    cfg["metrics"] = {"interval_s": 0.5}  # status.json (small, under the limit) shows frames still classified
    status = tmp_path / "state" / "status.json"

    def classified() -> int:
        try:
            return json.loads(status.read_text())["cameras"]["loop"]["classified"]
        except (OSError, ValueError, KeyError):
            return 0
    d = Daemon(tmp_path, cfg, preexec=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    d.start()
    try:
        d.wait(lambda: d.err.has("cannot append"), what="the journal's append failure in the log")
        after = classified()
        d.wait(lambda: classified() > after + 50, what="frames classified after the journal failed")  # goes on
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0
    assert "journal" in d.stderr and "cannot append" in d.stderr and "Traceback" not in d.stderr
    report("journal disk full (file size limit)", 1, len(journal_seqs(tmp_path / "state")),
           {"log": len(log_lines(log))}, 0, 0, 0.0)
