"""sd_notify against real AF_UNIX datagram sockets (path and abstract names), and a real daemon
subprocess: READY after the first frame, WATCHDOG pings while frames flow, STATUS, RELOADING on HUP,
STOPPING on TERM, and no more pings once the engine hangs (injected with a sitecustomize that wraps
the ONNX Runtime backend's ``run``: the daemon's code is unchanged)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import Follow, wait_until

from edge.notify import Notifier, Watchdog


class Listener:
    """A notify socket like systemd's: collects datagrams."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path[1:] if path.startswith("@") else path)
        self.messages: list[tuple[float, str]] = []

    def collect(self, until, timeout: float = 20.0) -> None:
        """Receive until ``until(messages)`` is true (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while not until([m for _, m in self.messages]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {[m for _, m in self.messages][-10:]}")
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def drain(self) -> None:
        """Take every datagram already queued on the socket, without waiting for more."""
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notifier_sends_to_path_and_abstract_sockets(tmp_path, kind):
    addr = str(tmp_path / "notify.sock") if kind == "path" else f"@edge-tsm-test-{uuid.uuid4().hex}"
    lis = Listener(addr)
    try:
        n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_s == 2.0
        assert n.ready("ready: x") and n.watchdog() and n.status("a\nb") and n.reloading() and n.stopping()
        lis.collect(lambda ms: len(ms) >= 5)
        msgs = [m for _, m in lis.messages]
        assert msgs[0] == "READY=1\nSTATUS=ready: x" and msgs[1] == "WATCHDOG=1" and msgs[2] == "STATUS=a b"
        assert msgs[3].startswith("RELOADING=1\nMONOTONIC_USEC=") and msgs[4] == "STOPPING=1"
        n.close()
    finally:
        lis.close()


def test_notifier_off_without_socket_and_for_other_pids(tmp_path, caplog):
    assert not Notifier({}).ready()
    assert Notifier({"NOTIFY_SOCKET": "x", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert not gone.ready() and not gone.ready()  # never raises, warns once
    assert sum("cannot send" in r.message for r in caplog.records) == 1


def test_a_manager_that_stops_reading_never_blocks_the_sender(tmp_path, monkeypatch, caplog):
    """The receiver's queue fills (it never reads): a send gives up after SEND_TIMEOUT_S, warned once."""
    import time

    import edge.notify
    monkeypatch.setattr(edge.notify, "SEND_TIMEOUT_S", 0.2)
    lis = Listener(str(tmp_path / "full.sock"))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "full.sock")})
        sent = 0
        t0 = time.monotonic()
        while n.status("x" * 200) and time.monotonic() - t0 < 30:
            sent += 1
        took = time.monotonic() - t0
        assert sent > 0 and took < 30, (sent, took)   # it stopped because a send failed, not at the guard
        assert sum("cannot send" in r.message for r in caplog.records) == 1
        n.close()
    finally:
        lis.close()


def test_watchdog_pings_only_while_healthy(tmp_path):
    lis = Listener(str(tmp_path / "n.sock"))
    state = {"ok": True, "refused": 0}

    def healthy() -> tuple[bool, str]:
        state["refused"] += not state["ok"]
        return state["ok"], "stuck for test"
    n = Notifier({"NOTIFY_SOCKET": lis.name, "WATCHDOG_USEC": "200000"})  # a round (ping + status) each 0.1 s
    wd = Watchdog(n, healthy, lambda: "fine", status_s=0.1)
    wd.start()
    try:
        lis.collect(lambda ms: ms.count("WATCHDOG=1") >= 3 and "STATUS=fine" in ms)
        state["ok"] = False
        wait_until(lambda: state["refused"], timeout=5, what="the watchdog asking and hearing 'not healthy'")
        lis.drain()  # a ping of the round before is queued already (same thread, sent before it asked)
        before = len([m for _, m in lis.messages if m == "WATCHDOG=1"])
        # Showing that something does NOT happen needs a measured wait: three more rounds (each sends its
        # status; a healthy one would also have pinged), about 0.3 s.
        n0 = len(lis.messages)
        lis.collect(lambda ms: ms[n0:].count("STATUS=fine") >= 3)
        assert len([m for _, m in lis.messages if m == "WATCHDOG=1"]) == before  # ...but no pings
        state["ok"] = True
        lis.collect(lambda ms: ms.count("WATCHDOG=1") > before)
    finally:
        wd.stop()
        lis.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("notify")
    return build_tiny_bundle(root / "tiny"), write_colour_video(root / "colours.avi")


def _start(tmp_path, setup, env_extra: dict, **cfg_extra) -> tuple[subprocess.Popen, Listener, str]:
    bundle, video = setup
    cfg = {"model": str(bundle), "cameras": [{"name": "loop", "source": str(video), "loop": True, "realtime": True}],
           "sinks": [{"type": "log", "path": str(tmp_path / "e.jsonl")}], **cfg_extra}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    lis = Listener(str(tmp_path / "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=lis.name, WATCHDOG_USEC="400000", PYTHONUNBUFFERED="1", **env_extra)
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, lis, str(path)


def test_daemon_ready_watchdog_status_reload_stopping(tmp_path, setup):
    proc, lis, _ = _start(tmp_path, setup, {})
    try:
        lis.collect(lambda ms: any(m.startswith("READY=1") for m in ms) and ms.count("WATCHDOG=1") >= 3
                    and any(m.startswith("STATUS=onnxruntime CPU") and "loop: online" in m for m in ms))
        ready = next(m for m in [m for _, m in lis.messages] if m.startswith("READY=1"))
        assert "onnxruntime" in ready and "CPU" in ready
        proc.send_signal(signal.SIGHUP)
        lis.collect(lambda ms: any(m.startswith("RELOADING=1") for m in ms)
                    and sum(m.startswith("READY=1") for m in ms) == 2)
        proc.send_signal(signal.SIGTERM)
        lis.collect(lambda ms: "STOPPING=1" in ms)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        lis.close()


def test_ready_at_once_when_no_camera_is_there_then_online_when_it_comes(tmp_path, setup):
    """The only camera's file is missing at start (at_start: retry): READY=1 comes once the model is up,
    its STATUS= names the camera waited for, the watchdog pings (waiting is no fault); when the file
    appears the camera goes online without a restart."""
    _bundle, video = setup
    late = tmp_path / "late.avi"
    proc, lis, _ = _start(tmp_path, setup, {}, cameras=[{"name": "door", "source": str(late), "loop": True,
                                                         "realtime": True,
                                                         "reconnect": {"initial_s": 0.1, "max_s": 0.4}}])
    try:
        lis.collect(lambda ms: any(m.startswith("READY=1") for m in ms) and ms.count("WATCHDOG=1") >= 3)
        ready = next(m for _, m in lis.messages if m.startswith("READY=1"))
        assert "waiting for camera door" in ready, ready
        assert any(m.startswith("STATUS=") and "door: waiting" in m for _, m in lis.messages)
        shutil.copy(video, tmp_path / "copying.avi")
        os.replace(tmp_path / "copying.avi", late)
        lis.collect(lambda ms: any(m.startswith("STATUS=") and "door: online" in m for m in ms))
        proc.send_signal(signal.SIGTERM)
        lis.collect(lambda ms: "STOPPING=1" in ms)
        assert proc.wait(timeout=20) == 0
        assert sum(m.startswith("READY=1") for _, m in lis.messages) == 1
    finally:
        proc.kill()
        lis.close()


def test_refused_reload_is_ready_again_and_says_why(tmp_path, setup):
    proc, lis, path = _start(tmp_path, setup, {})
    try:
        lis.collect(lambda ms: any(m.startswith("READY=1") for m in ms))
        Path(path).write_text("cameras: [{name: x, source: y, fps: -3}]\n")
        proc.send_signal(signal.SIGHUP)
        lis.collect(lambda ms: any(m.startswith("RELOADING=1") for m in ms)
                    and sum(m.startswith("READY=1") for m in ms) == 2)
        again = [m for _, m in lis.messages if m.startswith("READY=1")][-1]
        assert "reload refused, still running the previous config" in again and "fps" in again, again
        lis.collect(lambda ms: ms.count("WATCHDOG=1") >= 3)  # the previous pipeline serves on
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        lis.close()


SITECUSTOMIZE = textwrap.dedent("""
    import os, threading
    if os.environ.get("EDGE_TEST_HANG_AFTER"):
        from edge.backends import onnxruntime as _m
        _orig, _calls = _m.OrtBackend.run, [0]
        def _run(self, feeds):
            _calls[0] += 1
            if _calls[0] > int(os.environ["EDGE_TEST_HANG_AFTER"]):
                threading.Event().wait()  # the engine hangs for good
            return _orig(self, feeds)
        _m.OrtBackend.run = _run
""")


def test_hung_engine_stops_the_watchdog_pings(tmp_path, setup):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"EDGE_TEST_HANG_AFTER": "15", "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "inject"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc, lis, _ = _start(tmp_path, setup, env, engine={"type": "onnxruntime", "step_timeout_s": 1.0})
    err = Follow(proc.stderr)
    try:
        lis.collect(lambda ms: any(m.startswith("READY=1") for m in ms) and ms.count("WATCHDOG=1") >= 2)
        # 15 steps at 5 per second: the engine hangs ~3 s after start; step_timeout_s later the watchdog
        # says so in the log and stops pinging
        lis.collect(lambda ms: err.has("watchdog: a frame step has been running for"), timeout=30)
        lis.drain()  # pings sent before it gave up
        pings = sum(m == "WATCHDOG=1" for _, m in lis.messages)
        # Showing that pings do NOT resume needs a measured wait: 1 s, five watchdog rounds (WATCHDOG_USEC
        # 0.4 s: a ping every 0.2 s while healthy).
        t0 = time.monotonic()
        lis.collect(lambda ms: time.monotonic() > t0 + 1.0, timeout=5)
        assert sum(m == "WATCHDOG=1" for _, m in lis.messages) == pings, "pings went on after the engine hung"
        assert proc.poll() is None  # alive but stuck: systemd's watchdog would now kill and restart it
    finally:
        proc.kill()
        proc.wait(timeout=10)
        lis.close()
    assert "systemd will restart" in err.join()
