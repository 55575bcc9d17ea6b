"""A real daemon's idle CPU per camera, event latency with ``fsync: always``, start-to-READY time and RSS,
for this source tree or another one (``--tree``): the before/after figures of a change to the frame loop
or the journal, measured the same way on both.

``python -m edge.bench.ab [--tree DIR] [--seconds 20] [--json]`` starts ``python -m edge run`` (from DIR
when given: a ``git archive`` of an older commit, with ``edge/models`` linked to its ``models/``), under a
notify socket read as systemd reads it, three ways, one after the other:

* **idle**: 1, 2 and 4 synthetic cameras paced at 1 fps (a camera that is there but hardly delivers: the
  frame loop waits for it); the process's CPU time over ``--seconds`` after READY=1, read from
  /proc/PID/stat, as a percentage of one core. Per idle camera: the rise from 1 to 4 cameras over 3.
* **latency**: one synthetic camera at 15 fps with the chatty event settings (an event every few frames),
  ``journal: {fsync: always}`` in a state folder on disk and a ``unix`` sink; a client on the socket takes
  each event's arrival time minus its ``ts`` (the classified frame's capture time): capture to a delivered,
  journaled, fsynced event. p50, p90 and p99 in ms.
* **ready / RSS**: spawn to READY=1 (s), and VmRSS and VmHWM (MB) at the end of the latency run.

The figures are noisy on a shared machine (docs/performance.md): run both trees in one session, side by
side, with nothing else running.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.bench.kit import CHATTY_EVENTS
from edge.bench.kit import _proc_cpu_s as _cpu_s
from edge.bench.soak import _NotifyReader

CAMERAS_IDLE = (1, 2, 4)


def _mem_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key.lower() + "_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


class _Events(threading.Thread):
    """A unix-socket subscriber: each event line's arrival time minus its ``ts``, in ms."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.latency_ms, self.stop = path, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.path))
                break
            except OSError:  # the daemon has not bound it yet
                s.close()
                time.sleep(0.02)
        else:
            return
        s.settimeout(0.2)
        buf = b""
        while not self.stop.is_set():
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            now = time.time()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                ev = json.loads(line)
                ts = datetime.fromisoformat(ev["ts"].replace("Z", "+00:00")).timestamp()
                self.latency_ms.append((now - ts) * 1e3)
        s.close()


def run_daemon(tree: Path | None, cfg: dict[str, Any], work: Path, seconds: float,
               subscriber: Path | None = None) -> dict[str, Any]:
    """Run ``cfg`` for ``seconds`` after READY=1; its ready time, CPU % of one core, memory, latencies."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    sock_path = work / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=str(sock_path), PYTHONUNBUFFERED="1")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    notes = _NotifyReader(sock)
    events = _Events(subscriber) if subscriber else None
    with open(work / "daemon.stderr", "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "edge", "-q", "run", "--config", str(work / "config.yaml")],
                                cwd=str(tree) if tree else None, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            while not notes.ready.wait(0.05):
                if proc.poll() is not None or time.monotonic() - t0 > 120:
                    tail = (work / "daemon.stderr").read_text(errors="replace").strip().splitlines()[-3:]
                    raise SystemExit(f"ab: the daemon gave no READY=1 (exit {proc.poll()}): {' / '.join(tail)}")
            ready_s = time.monotonic() - t0
            if events:
                events.start()
            time.sleep(2.0)  # a measuring clock: the first frames and the engine's warm-up left out
            c0, w0 = _cpu_s(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu_pct = 100 * (_cpu_s(proc.pid) - c0) / (time.monotonic() - w0)
            mem = _mem_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if events:
                events.stop.set()
                events.join(2)
            notes.stop()
            sock_path.unlink(missing_ok=True)
    out = {"ready_s": round(ready_s, 2), "cpu_pct": round(cpu_pct, 2), **mem}
    if events:
        out["events"] = len(events.latency_ms)
        a = np.asarray(events.latency_ms or [np.nan])
        out["latency_ms"] = {f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 90, 99)}
    return out


def measure(tree: Path | None, seconds: float, work: Path, model: str = "default") -> dict[str, Any]:
    base = {"model": model, "engine": {"type": "onnxruntime", "threads": 1}}
    idle = {}
    for n in CAMERAS_IDLE:
        cams = [{"name": f"cam{i}", "source": "synthetic", "realtime": True, "fps": 1.0} for i in range(n)]
        cfg = {**base, "cameras": cams, "state_dir": str(work / f"idle{n}" / "state"),
               "sinks": [{"type": "log", "path": str(work / f"idle{n}" / "events.jsonl")}]}
        idle[n] = run_daemon(tree, cfg, work / f"idle{n}", seconds)
    sub = work / "lat" / "events.sock"
    cfg = {**base, "cameras": [{"name": "cam0", "source": "synthetic", "realtime": True, "fps": 15.0}],
           "events": CHATTY_EVENTS, "state_dir": str(work / "lat" / "state"), "journal": {"fsync": "always"},
           "sinks": [{"type": "unix", "path": str(sub)}]}
    lat = run_daemon(tree, cfg, work / "lat", seconds, subscriber=sub)
    per_cam = (idle[CAMERAS_IDLE[-1]]["cpu_pct"] - idle[CAMERAS_IDLE[0]]["cpu_pct"]) / (CAMERAS_IDLE[-1] - 1)
    return {"tree": str(tree) if tree else "this one", "seconds": seconds,
            "idle_cpu_pct": {n: r["cpu_pct"] for n, r in idle.items()},
            "cpu_pct_per_idle_camera": round(per_cam, 2), "latency_fsync_always_ms": lat.get("latency_ms"),
            "events": lat.get("events"), "ready_s": lat["ready_s"], "rss_mb": lat.get("vmrss_mb"),
            "peak_rss_mb": lat.get("vmhwm_mb")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", type=Path, help="another source tree to run (default: this one)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (default 20)")
    p.add_argument("--model", default="default", help="bundle (default: the tree's default; give one folder to "
                   "compare trees on the same graph)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-ab-") as tmp:
        r = measure(a.tree.resolve() if a.tree else None, a.seconds, Path(tmp), a.model)
    if a.json:
        print(json.dumps(r))
    else:
        lat = r["latency_fsync_always_ms"] or {}
        idle = ", ".join(f"{n} cameras {v:.2f}" for n, v in r["idle_cpu_pct"].items())
        print(f"{r['tree']}: idle CPU % of a core at {idle}"
              f" (per idle camera {r['cpu_pct_per_idle_camera']:.2f}); event latency, fsync always: p50 "
              f"{lat.get('p50', float('nan')):.1f} ms, p90 {lat.get('p90', float('nan')):.1f} ms, p99 "
              f"{lat.get('p99', float('nan')):.1f} ms ({r['events']} events); "
              f"ready {r['ready_s']:.2f} s; RSS {r['rss_mb']} MB (peak {r['peak_rss_mb']} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
