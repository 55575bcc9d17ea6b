"""Reload and boot faults against a real daemon subprocess (``python -m edge run``), real files, real ptys.

Reload is transactional: a SIGHUP while a camera's file is away is a waiting camera in the new pipeline
(the other camera never stops); a new config whose log path cannot work is refused and the running
pipeline goes on untouched; 30 HUPs in a row lose and repeat nothing. Devices late at boot: a camera file
and a serial port (a pty behind a symlink, as udev's by-id link) that appear seconds after the start are
picked up without a restart while the rest runs from the first second. Each test compares what the sinks
received with the journal (every event once, in order) and prints a FAULT line (``pytest -s``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from test_faults import Daemon, _read_pty, base_cfg, check_once_in_order, journal_seqs, log_lines, report, seqs_of
from tinymodel import build_tiny_bundle, write_colour_video

FAST_RECONNECT = {"initial_s": 0.1, "max_s": 0.4}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reload")
    return build_tiny_bundle(root / "tiny"), write_colour_video(root / "colours.avi")


def from_cam(log: Path, cam: str) -> int:
    return sum(json.loads(x)["camera"] == cam for x in log_lines(log))


def status(tmp: Path) -> dict:
    try:
        return json.loads((tmp / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def camera_state(tmp: Path, cam: str) -> str | None:
    return status(tmp).get("cameras", {}).get(cam, {}).get("state")


def sink_state(tmp: Path, sink: str) -> str | None:
    return status(tmp).get("sinks", {}).get(sink, {}).get("state")


def two_cameras(assets, tmp: Path, first_source: str, sinks: list[dict]) -> dict:
    """'door' on ``first_source`` (fast reconnect) and 'steady' on the shared video, both looping in real time."""
    cfg = base_cfg(assets, tmp, True, sinks)
    cfg["metrics"] = {"interval_s": 0.5}
    cfg["cameras"] = [{"name": "door", "source": first_source, "loop": True, "realtime": True,
                       "reconnect": FAST_RECONNECT},
                      {"name": "steady", "source": str(assets[1]), "loop": True, "realtime": True}]
    return cfg


def test_hup_while_a_camera_file_is_away_keeps_both_cameras(assets, tmp_path):
    clip = tmp_path / "door.avi"
    shutil.copy(assets[1], clip)
    log = tmp_path / "events.jsonl"
    d = Daemon(tmp_path, two_cameras(assets, tmp_path, str(clip), [{"type": "log", "path": str(log)}]))
    d.start()
    try:
        d.wait(lambda: from_cam(log, "door") >= 2 and from_cam(log, "steady") >= 2)
        os.replace(clip, tmp_path / "away.avi")  # gone at the next loop: the camera reconnects
        d.wait(lambda: d.err.has("reconnecting"), what="the door camera reconnecting")
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda: d.err.has("reloaded in"), what="the reload swapped in")
        d.wait(lambda: camera_state(tmp_path, "door") == "waiting", what="door waiting in the new pipeline")
        steady = from_cam(log, "steady")
        d.wait(lambda: from_cam(log, "steady") >= steady + 2)  # the healthy camera classifies on
        door = from_cam(log, "door")
        os.replace(tmp_path / "away.avi", clip)
        t_back = time.monotonic()
        d.wait(lambda: from_cam(log, "door") >= door + 2, what="door events once its file is back")
        recovery = time.monotonic() - t_back
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0, d.stderr
    assert "reload refused" not in d.stderr and "Traceback" not in d.stderr
    assert "waiting for it (handed over at a reload)" in d.stderr
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    assert want == list(range(1, len(want) + 1))
    dups, lost = check_once_in_order(got, want)
    report("SIGHUP while a camera file is away (2 cameras)", 1, len(want), {"log": len(got)}, dups, lost, recovery)
    assert (dups, lost) == (0, 0)


def test_hup_with_a_log_path_through_a_file_is_refused_and_the_old_config_runs_on(assets, tmp_path):
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "log", "path": str(log)}])
    d = Daemon(tmp_path, cfg)
    d.start()
    try:
        d.wait(lambda: len(log_lines(log)) >= 2)
        (tmp_path / "afile").write_text("x")
        bad = dict(cfg, sinks=[{"type": "log", "path": str(log)},
                               {"type": "log", "name": "other", "path": str(tmp_path / "afile" / "e.jsonl")}])
        d.path.write_text(yaml.safe_dump(bad))
        d.proc.send_signal(signal.SIGHUP)
        t_hup = time.monotonic()
        d.wait(lambda: d.err.has("reload refused"), what="the reload refused")
        refused = time.monotonic() - t_hup
        n = len(log_lines(log))
        d.wait(lambda: len(log_lines(log)) >= n + 2)  # the previous config goes on
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0, d.stderr
    line = next(x for x in d.stderr.splitlines() if "reload refused" in x)
    assert "still running the previous config" in line and "sink other" in line and "afile" in line, line
    assert "reloaded in" not in d.stderr and "Traceback" not in d.stderr
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    dups, lost = check_once_in_order(got, want)
    report("SIGHUP with a new log path through a file: refused, old config runs on", 1, len(want),
           {"log": len(got)}, dups, lost, refused)
    assert (dups, lost) == (0, 0)


def test_thirty_hups_in_a_row_lose_and_repeat_nothing(assets, tmp_path):
    """A durable log, a memory-fed log and a serial port (a pty: handed over at each swap, the old pipeline
    closes it, the new one opens it) across a burst of HUPs: each sink has every journaled event once."""
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    durable, live = tmp_path / "events.jsonl", tmp_path / "live.jsonl"
    cfg = base_cfg(assets, tmp_path, False, [{"type": "log", "path": str(durable)},
                                            {"type": "log", "name": "live", "path": str(live), "durable": False},
                                            {"type": "serial", "port": os.ttyname(slave), "format": "json"}])
    d = Daemon(tmp_path, cfg)
    d.start()
    hups, line = 30, bytearray()
    try:
        d.wait(lambda: len(log_lines(durable)) >= 2)
        t0 = time.monotonic()
        for _ in range(hups):
            assert d.alive(), d.stderr
            d.proc.send_signal(signal.SIGHUP)
            _read_pty(master, line, timeout=0.05)  # also paces the burst: 30 HUPs in about 1.5 s, as a loop would

        def settled() -> bool:  # every build that began ended in a swap, and the serial line is read on
            _read_pty(master, line, timeout=0.0)
            text = d.stderr
            return text.count("SIGHUP: reloading") == text.count("reloaded in") >= 1
        d.wait(settled, what="the last reload swapped in")
        n = len(log_lines(durable))
        d.wait(lambda: (_read_pty(master, line, timeout=0.0), len(log_lines(durable)) >= n + 20)[1])
        recovery = time.monotonic() - t0
        # the line is read all through the stop, as a device on the port would: unread, the pty's buffer
        # fills while the daemon drains, its write times out and the rest waits in the journal (by design)
        reading = threading.Event()
        reading.set()

        def read_on() -> None:
            while reading.is_set():
                _read_pty(master, line, timeout=0.02)
        reader = threading.Thread(target=read_on, daemon=True)
        reader.start()
        code, _ = d.stop()
        want = journal_seqs(tmp_path / "state")
        d.wait(lambda: seqs_of(bytes(line).splitlines())[-1:] == want[-1:],
               what="the serial line carrying the last event")
    finally:
        if "reading" in locals():
            reading.clear()
            reader.join(5)
        d.kill()
        os.close(master)
        os.close(slave)
    assert code == 0, d.stderr
    assert "reload refused" not in d.stderr and "Traceback" not in d.stderr
    reloads = d.stderr.count("reloaded in")
    assert want == list(range(1, len(want) + 1))
    got = {"log": seqs_of(log_lines(durable)), "live (memory-fed) log": seqs_of(log_lines(live)),
           "serial": seqs_of(bytes(line).splitlines())}
    found = {k: check_once_in_order(v, want) for k, v in got.items()}
    report(f"{hups} SIGHUPs in a row ({reloads} reloads)", hups, len(want), {k: len(v) for k, v in got.items()},
           sum(x[0] for x in found.values()), sum(x[1] for x in found.values()), recovery)
    assert all(x == (0, 0) for x in found.values()), found


def test_camera_missing_at_start_is_picked_up_when_it_appears(assets, tmp_path):
    late = tmp_path / "usb" / "late.avi"  # its folder is missing too, as a stick not mounted yet
    log = tmp_path / "events.jsonl"
    d = Daemon(tmp_path, two_cameras(assets, tmp_path, str(late), [{"type": "log", "path": str(log)}]))
    d.start()
    try:
        d.wait(lambda: from_cam(log, "steady") >= 2, what="the present camera classifying at once")
        d.wait(lambda: camera_state(tmp_path, "door") == "waiting", what="status.json: door waiting")
        assert from_cam(log, "door") == 0
        late.parent.mkdir()
        shutil.copy(assets[1], tmp_path / "copying.avi")
        os.replace(tmp_path / "copying.avi", late)  # the file appears whole, as a device node does
        t_plug = time.monotonic()
        d.wait(lambda: from_cam(log, "door") >= 2, what="door events once its file appeared")
        recovery = time.monotonic() - t_plug
        d.wait(lambda: camera_state(tmp_path, "door") == "online")
        pid = d.proc.pid
        code, _ = d.stop()
    finally:
        d.kill()
    assert code == 0, d.stderr
    assert d.stderr.count("ready in") == 1 and pid == d.proc.pid  # no restart
    assert "camera door: " in d.stderr and "is there now" in d.stderr
    got, want = seqs_of(log_lines(log)), journal_seqs(tmp_path / "state")
    dups, lost = check_once_in_order(got, want)
    report("camera file missing at start, appears later (2 cameras)", 1, len(want), {"log": len(got)}, dups, lost,
           recovery)
    assert (dups, lost) == (0, 0)


def test_serial_port_missing_at_start_is_picked_up_when_it_appears(assets, tmp_path):
    import tty
    link = tmp_path / "ttyUSB-by-id"
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [
        {"type": "serial", "port": str(link), "format": "json", "reconnect": FAST_RECONNECT},
        {"type": "log", "path": str(log)}])
    cfg["metrics"] = {"interval_s": 0.5}
    d = Daemon(tmp_path, cfg)
    d.start()
    master = slave = None
    got = bytearray()
    try:
        d.wait(lambda: len(log_lines(log)) >= 3, what="events while the port is not there")
        d.wait(lambda: sink_state(tmp_path, "serial") == "waiting", what="status.json: serial waiting")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.symlink(os.ttyname(slave), link)  # plugged in: udev makes the by-id link
        t_plug = time.monotonic()
        want_n = len(log_lines(log))
        d.wait(lambda: (_read_pty(master, got), len(seqs_of(bytes(got).splitlines())) >= want_n)[1],
               what="the serial backlog on the port")
        recovery = time.monotonic() - t_plug
        d.wait(lambda: sink_state(tmp_path, "serial") == "open")
        code, _ = d.stop()
        _read_pty(master, got, timeout=0.3)
    finally:
        d.kill()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
    assert code == 0, d.stderr
    assert d.stderr.count("ready in") == 1 and "waiting for it (at_start: retry)" in d.stderr
    assert "the port is there now" in d.stderr
    want = journal_seqs(tmp_path / "state")
    serial = seqs_of(bytes(got).splitlines())
    dups, lost = check_once_in_order(serial, want)
    report("serial port missing at start, appears later (pty behind a symlink)", 1, len(want),
           {"serial": len(serial), "log": len(log_lines(log))}, dups, lost, recovery)
    assert (dups, lost) == (0, 0) and seqs_of(log_lines(log)) == want


def test_hup_while_a_required_serial_port_is_unplugged_hands_it_over_late(assets, tmp_path):
    """at_start: require only guards the start: a reload while the port is away swaps anyway, the port is
    opened in the background ('waiting' in status) and gets every journaled event once it is back."""
    import tty
    link = tmp_path / "ttyUSB-by-id"
    log = tmp_path / "events.jsonl"
    cfg = base_cfg(assets, tmp_path, True, [{"type": "serial", "port": str(link), "format": "json",
                                             "at_start": "require"}, {"type": "log", "path": str(log)}])
    cfg["metrics"] = {"interval_s": 0.5}
    fds = list(os.openpty())
    tty.setraw(fds[1])
    os.symlink(os.ttyname(fds[1]), link)
    d = Daemon(tmp_path, cfg)
    d.start()
    got = bytearray()
    try:
        d.wait(lambda: (_read_pty(fds[0], got), len(seqs_of(bytes(got).splitlines())) >= 2)[1])
        link.unlink()  # unplugged: udev removes the by-id link (the daemon's open descriptor still works)
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda: (_read_pty(fds[0], got), d.err.has("reloaded in"))[1], what="the reload swapped in")
        d.wait(lambda: sink_state(tmp_path, "serial") == "waiting", what="status.json: serial waiting")
        n = len(log_lines(log))
        d.wait(lambda: len(log_lines(log)) >= n + 2)  # events go on meanwhile
        fds += os.openpty()
        tty.setraw(fds[3])
        os.symlink(os.ttyname(fds[3]), link)  # plugged in again, a new tty behind the link
        t_plug = time.monotonic()
        d.wait(lambda: (_read_pty(fds[2], got), len(seqs_of(bytes(got).splitlines())) >= len(log_lines(log)))[1],
               what="the backlog on the new port")
        recovery = time.monotonic() - t_plug
        code, _ = d.stop()
        _read_pty(fds[2], got, timeout=0.3)
    finally:
        d.kill()
        for fd in fds:
            os.close(fd)
    assert code == 0, d.stderr
    assert "opening it again with backoff while the rest runs (handed over at a reload)" in d.stderr
    assert "open now, after the reload" in d.stderr and "reload refused" not in d.stderr
    want = journal_seqs(tmp_path / "state")
    serial = seqs_of(bytes(got).splitlines())
    dups, lost = check_once_in_order(serial, want)
    report("SIGHUP while a required serial port is unplugged: handed over late", 1, len(want),
           {"serial": len(serial), "log": len(log_lines(log))}, dups, lost, recovery)
    assert (dups, lost) == (0, 0)


@pytest.mark.parametrize("device", ["camera", "serial"])
def test_at_start_require_keeps_the_exit_codes(assets, tmp_path, device):
    cfg = base_cfg(assets, tmp_path, False, [{"type": "log", "path": str(tmp_path / "events.jsonl")}])
    if device == "camera":
        cfg["cameras"].append({"name": "door", "source": str(tmp_path / "nope.avi"), "at_start": "require"})
    else:
        cfg["sinks"].append({"type": "serial", "port": str(tmp_path / "ttyUSB9"), "at_start": "require"})
    d = Daemon(tmp_path, cfg)
    d.start()
    code = d.proc.wait(timeout=60)
    err = d.err.join().strip().splitlines()
    assert code == (66 if device == "camera" else 69), err
    assert err[-1].startswith("edge-tsm: error: ") and ("nope.avi" if device == "camera" else "ttyUSB9") in err[-1]
