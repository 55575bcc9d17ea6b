"""Soak: the daemon with 8 cameras for N minutes; does its memory or its file descriptor count grow?

``python -m edge.bench.soak --minutes 10`` writes a config (8 looping, realtime MJPG file cameras,
640x480 at 15 fps, as the bench's camera-like clip; the chatty event settings, so events flow all the
time; a durable log sink; a 1 MB journal, so segments rotate during the run), starts ``python -m edge
run`` on it under a fake systemd notify socket, waits for READY=1, then every ``--interval`` seconds reads
from /proc the daemon's resident memory (VmRSS), its open file descriptors (/proc/PID/fd) and threads,
plus what status.json says (frames classified, events journaled). At the end it stops the daemon with
SIGTERM (exit 0 expected) and reports, for each series, the first value, the value at one minute, the
last, and the least-squares slope per hour over the whole run and over the part after the first minute
(allocator pools, caches and the journal's first segments fill in the first minute; a leak keeps
climbing after it). A slope is only as good as the run is long: the docs quote a 10-minute run.

A measurement, not a test: nothing passes or fails (``tests/test_soak.py`` runs it for seconds to keep
it working). ``--seconds`` replaces ``--minutes`` for short runs.
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
from pathlib import Path
from typing import Any

import yaml

from edge.errors import EdgeError, ModelError, UsageError

SERIES = ("rss_mb", "fds", "threads")
# Left out of the late slope: allocator pools and ONNX Runtime's arenas fill in the first minute, and the
# journal's in-memory ring (its last 4096 records, for readers that catch up) in about 2 minutes at the
# soak's 33 events/s; tracemalloc showed the Python heap flat after that (43 -> 48.4 MB in 5 min, then
# 48.4-49.6 MB to 14 min).
WARMUP_S = 180.0


def slope_per_hour(t: list[float], y: list[float]) -> float | None:
    """Least-squares slope of ``y`` over ``t`` (seconds), per hour; None with fewer than 2 points."""
    n = len(t)
    if n < 2:
        return None
    mt, my = sum(t) / n, sum(y) / n
    var = sum((a - mt) ** 2 for a in t)
    if var == 0:
        return None
    return sum((a - mt) * (b - my) for a, b in zip(t, y, strict=True)) / var * 3600.0


def proc_sample(pid: int) -> dict[str, float]:
    """VmRSS (MB), open file descriptors and threads of ``pid``, from /proc.

    Raises:
        OSError: the process is gone.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return {"rss_mb": round(fields.get("VmRSS", 0) / 1024, 2), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": fields.get("Threads", 0)}


def _status(state: Path) -> dict[str, Any]:
    try:
        snap = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    cams = snap.get("cameras") if isinstance(snap, dict) else None
    if not isinstance(cams, dict):
        return {}
    return {"classified": sum(int(c.get("classified", 0)) for c in cams.values() if isinstance(c, dict)),
            "events": snap.get("journal_last_seq")}


def soak_config(work: Path, model: str, cameras: int, engine: str, source: str, size: tuple[int, int],
                fps: float) -> Path:
    """The daemon's config for the soak, written into ``work``; the camera clip made there too."""
    from edge.bench.kit import CHATTY_EVENTS, write_clip
    if source == "file":
        clip = work / f"camera-{size[0]}x{size[1]}-{fps:g}.avi"
        write_clip(clip, size, fps, seconds=20.0)
        cam = {"source": str(clip), "loop": True, "realtime": True}
    else:
        cam = {"source": "synthetic"}
    cfg = {"model": model, "engine": {"type": engine}, "state_dir": str(work / "state"),
           "cameras": [{"name": f"cam{i}", **cam} for i in range(cameras)], "events": CHATTY_EVENTS,
           "sinks": [{"type": "log", "path": str(work / "events.jsonl")}], "journal": {"max_mb": 1},
           "metrics": {"interval_s": 1.0}, "status_interval_s": 0}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_soak(config: Path, seconds: float, interval: float, work: Path, ready_timeout: float = 300.0,
             progress: bool = False, warmup_s: float = WARMUP_S) -> dict[str, Any]:
    """Run the daemon on ``config`` for ``seconds`` after READY=1, sampling every ``interval`` s.

    Raises:
        ModelError: the daemon exited early or sent no READY=1 within ``ready_timeout`` (its stderr tail in
            the message).
    """
    sock_path = work / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=str(sock_path), PYTHONUNBUFFERED="1")
    err_path = work / "daemon.stderr"
    state = Path(yaml.safe_load(config.read_text())["state_dir"])
    samples: list[dict[str, Any]] = []
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "-q", "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)

        def failed(why: str) -> ModelError:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
            return ModelError(f"soak: the daemon {why}: {' / '.join(tail) or 'no output'}")
        notes = _NotifyReader(sock)  # read all along: systemd does, and a full socket would block the daemon
        try:
            t0 = time.monotonic()
            while not notes.ready.wait(0.5):
                if proc.poll() is not None:
                    raise failed(f"exited {proc.returncode} before READY=1")
                if time.monotonic() - t0 > ready_timeout:
                    raise failed(f"sent no READY=1 in {ready_timeout:g} s")
            ready_s = time.monotonic() - t0
            start = time.monotonic()
            n = 0
            while True:
                due = start + n * interval
                time.sleep(max(0.0, due - time.monotonic()))  # a sampling clock, not a wait for a condition
                if proc.poll() is not None:
                    raise failed(f"exited {proc.returncode} during the soak")
                samples.append({"t": round(time.monotonic() - start, 2), **proc_sample(proc.pid), **_status(state)})
                if progress:
                    s = samples[-1]
                    print(f"  {s['t']:7.1f} s  RSS {s['rss_mb']:7.1f} MB  fds {s['fds']:4d}  threads "
                          f"{s['threads']:3d}  classified {s.get('classified', '?')}", file=sys.stderr)
                n += 1
                if n * interval > seconds + 1e-9:
                    break
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            notes.stop()
            sock_path.unlink(missing_ok=True)
    out = summarize(samples, ready_s, code, warmup_s)
    out["last_status"] = notes.status
    return out


class _NotifyReader:
    """Reads the daemon's sd_notify datagrams in a thread, as systemd would: READY=1 sets ``ready``;
    the last STATUS= is kept."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.ready, self.status = sock, threading.Event(), ""
        self._stop = threading.Event()
        sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name="soak-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in msg.decode(errors="replace").split("\n"):
                if line == "READY=1":
                    self.ready.set()
                elif line.startswith("STATUS="):
                    self.status = line[7:]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()


def summarize(samples: list[dict[str, Any]], ready_s: float, exit_code: int,
              warmup_s: float = WARMUP_S) -> dict[str, Any]:
    """First, end-of-warm-up and last values and the slopes per hour of each series, over the whole run and
    over the part after ``warmup_s``."""
    out: dict[str, Any] = {"ready_s": round(ready_s, 2), "exit_code": exit_code, "samples": samples,
                           "seconds": samples[-1]["t"] if samples else 0.0, "warmup_s": warmup_s}
    t = [s["t"] for s in samples]
    late = [i for i, x in enumerate(t) if x >= warmup_s]
    at_warm = samples[late[0]] if late else None
    for key in SERIES:
        y = [float(s[key]) for s in samples]
        slope = slope_per_hour(t, y)
        slope_late = slope_per_hour([t[i] for i in late], [y[i] for i in late]) if len(late) >= 2 else None
        out[key] = {"start": y[0] if y else None, "at_warmup": at_warm[key] if at_warm else None,
                    "end": y[-1] if y else None, "max": max(y) if y else None,
                    "slope_per_h": None if slope is None else round(slope, 3),
                    "slope_per_h_after_warmup": None if slope_late is None else round(slope_late, 3)}
    if samples:
        out["classified"] = samples[-1].get("classified")
        out["events"] = samples[-1].get("events")
    return out


def format_report(r: dict[str, Any], what: str) -> str:
    warm = f"{r['warmup_s']:g}s"

    def v(x: Any, unit: str = "") -> str:
        return "-" if x is None else f"{x:g}{unit}" if isinstance(x, float) else f"{x}{unit}"
    rows = [f"soak: {what}; {r['seconds']:g} s after READY=1 (ready in {r['ready_s']:g} s), "
            f"{len(r['samples'])} samples; exit {r['exit_code']}",
            f"{'':10} {'start':>9} {f'at {warm}':>9} {'end':>9} {'max':>9} {'slope/h':>10} {f'slope/h >{warm}':>14}"]
    for key, name in (("rss_mb", "RSS MB"), ("fds", "open fds"), ("threads", "threads")):
        s = r[key]
        rows.append(f"{name:10} {v(s['start']):>9} {v(s['at_warmup']):>9} {v(s['end']):>9} {v(s['max']):>9} "
                    f"{v(s['slope_per_h']):>10} {v(s['slope_per_h_after_warmup']):>14}")
    rows.append(f"frames classified {v(r.get('classified'))}, events journaled {v(r.get('events'))}")
    if r.get("last_status"):
        rows.append(f"last STATUS: {r['last_status']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.bench.soak", description=__doc__.split("\n\n")[0])
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0, help="length after READY=1 (default 10)")
    length.add_argument("--seconds", type=float, help="length in seconds instead (short runs)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--warmup", type=float, default=WARMUP_S,
                    help=f"seconds after READY=1 left out of the late slope (default {WARMUP_S:g}: the journal's "
                         "in-memory ring of 4096 records fills in about 2 minutes at this config's 33 events/s)")
    ap.add_argument("--cameras", type=int, default=8, help="cameras (default 8)")
    ap.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    ap.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "openvino"])
    ap.add_argument("--source", default="file", choices=["file", "synthetic"],
                    help="file: a looping realtime MJPG clip per camera (default); synthetic: rendered frames")
    ap.add_argument("--size", default="640x480", help="file cameras' frame size (default 640x480)")
    ap.add_argument("--fps", type=float, default=15.0, help="file cameras' frame rate (default 15)")
    ap.add_argument("--work", help="keep the config, clip, state and daemon log here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="one JSON object (with every sample) instead of the table")
    ap.add_argument("--progress", action="store_true", help="print each sample to stderr as it is taken")
    a = ap.parse_args(argv)
    try:
        seconds = a.seconds if a.seconds is not None else a.minutes * 60.0
        w, _, h = a.size.partition("x")
        if not (seconds > 0 and a.interval > 0 and 1 <= a.cameras <= 64 and w.isdigit() and h.isdigit()):
            raise UsageError("soak: need --minutes/--seconds > 0, --interval > 0, 1 <= --cameras <= 64, --size WxH")
        with tempfile.TemporaryDirectory(prefix="edge-tsm-soak-") as tmp:
            work = Path(a.work) if a.work else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            config = soak_config(work, a.model, a.cameras, a.engine, a.source, (int(w), int(h)), a.fps)
            r = run_soak(config, seconds, a.interval, work, progress=a.progress, warmup_s=a.warmup)
    except EdgeError as e:
        print(f"edge-tsm: error: {e}", file=sys.stderr)
        return e.exit_code
    what = (f"{a.cameras} {a.source} cameras" + (f" ({a.size} MJPG at {a.fps:g} fps, looped, realtime)"
                                                  if a.source == "file" else "") + f", model {a.model} on {a.engine}")
    print(json.dumps({"what": what, **r}) if a.json else format_report(r, what))
    return 0


if __name__ == "__main__":
    sys.exit(main())
