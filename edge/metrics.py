"""Metrics of the running daemon: a status file ``edge-tsm status`` reads, and Prometheus text.

Every ``interval_s`` the daemon writes ``<state_dir>/status.json`` (atomically: a reader never sees half
a file) and, when configured, a node-exporter textfile (``textfile``) and/or serves the same text on a
localhost HTTP port (``listen``: ``127.0.0.1:9108``). Per camera: state, read fps, frames read,
classified, stale frames skipped, reconnects, inference time (a histogram), events per label; per sink:
delivered, pending (backlog), dropped, errors, state.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, DeviceError, InputError, StateError
from edge.paths import show_path
from edge.schema import short
from edge.state import NotRegular, read_regular
from edge.util import atomic_write

logger = logging.getLogger(__name__)

BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 1000.0)
STATUS_FILE = "status.json"


class Histogram:
    """Cumulative counts per upper bound (Prometheus style), plus sum and count; not thread-safe
    on purpose: only the inference loop writes it, readers take a copy."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_MS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, ms: float) -> None:
        i = 0
        while i < len(BUCKETS_MS) and ms > BUCKETS_MS[i]:
            i += 1
        self.counts[i] += 1
        self.sum += ms
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        cumulative, acc = [], 0
        for c in self.counts:
            acc += c
            cumulative.append(acc)
        return {"buckets_ms": list(BUCKETS_MS), "cumulative": cumulative, "sum_ms": round(self.sum, 3),
                "count": self.count}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snap: dict[str, Any]) -> str:
    """The snapshot as Prometheus exposition text (metric names ``edge_tsm_*``)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, rows: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP edge_tsm_{name} {help_}")
        out.append(f"# TYPE edge_tsm_{name} {kind}")
        for labels, value in rows:
            lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
            out.append(f"edge_tsm_{name}{{{lab}}} {value}")

    cams = snap.get("cameras", {})
    running = snap.get("running", True) is not False  # a stopped daemon's last status: nothing is up or online
    metric("up", "gauge", "1 while the daemon runs", [({}, int(running))])
    metric("camera_online", "gauge", "1 when the camera delivers frames",
           [({"camera": c}, int(running and v["state"] == "online")) for c, v in cams.items()])
    metric("camera_fps", "gauge", "frames read per second", [({"camera": c}, v["fps"]) for c, v in cams.items()])
    for key, help_ in (("frames_read", "frames read from the camera"), ("classified", "frames classified"),
                       ("skipped", "stale frames skipped (latest-frame semantics)"),
                       ("reconnects", "camera reconnects")):
        metric(f"{key}_total", "counter", help_, [({"camera": c}, v[key]) for c, v in cams.items()])
    out.append("# HELP edge_tsm_inference_ms engine step per frame (preprocessing runs in the capture threads)")
    out.append("# TYPE edge_tsm_inference_ms histogram")
    for c, v in cams.items():
        h = v["inference_ms"]
        for le, n in zip([*map(str, h["buckets_ms"]), "+Inf"], h["cumulative"], strict=False):
            out.append(f'edge_tsm_inference_ms_bucket{{camera="{_esc(c)}",le="{le}"}} {n}')
        out.append(f'edge_tsm_inference_ms_sum{{camera="{_esc(c)}"}} {h["sum_ms"]}')
        out.append(f'edge_tsm_inference_ms_count{{camera="{_esc(c)}"}} {h["count"]}')
    metric("events_total", "counter", "events started, per label",
           [({"camera": c, "label": lab}, n) for c, v in cams.items() for lab, n in v["events"].items()])
    sinks = snap.get("sinks", {})
    for key, kind, help_ in (("delivered", "counter", "events delivered"), ("pending", "gauge", "sink backlog"),
                             ("dropped", "counter", "events dropped"), ("errors", "counter", "failed writes")):
        metric(f"sink_{key}" + ("_total" if kind == "counter" else ""), kind, help_,
               [({"sink": s}, v[key]) for s, v in sinks.items()])
    for key, help_ in (("crashes", "sink threads restarted after an unexpected error"),
                       ("reopened", "log files reopened after being removed or replaced")):
        metric(f"sink_{key}_total", "counter", help_,
               [({"sink": s}, v[key]) for s, v in sinks.items() if _number(v.get(key))])
    clips = snap.get("clips")
    if clips:
        for key, kind, help_ in (("written", "counter", "field clips written"),
                                 ("dropped", "counter", "field clips dropped (writer behind)"),
                                 ("failed", "counter", "field clips that could not be written"),
                                 ("removed", "counter", "field clips removed by the quota"),
                                 ("bytes", "gauge", "size of the clip spool")):
            metric(f"clips_{key}" + ("_total" if kind == "counter" else ""), kind, help_, [({}, clips[key])])
    return "\n".join(out) + "\n"


class _Handler(BaseHTTPRequestHandler):
    text: Callable[[], str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = type(self).text().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("metrics http: " + fmt, *args)


class MetricsWriter:
    """A thread that writes the status file / textfile every ``interval_s`` and serves ``listen``."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], *, state_dir: Path | None, interval_s: float = 5.0,
                 textfile: str | None = None, listen: str | None = None) -> None:
        """Raises: ConfigError for a bad ``listen``; DeviceError when the port cannot be bound."""
        self.snapshot = snapshot
        self.state_dir = state_dir
        self.interval_s = interval_s
        self.textfile = Path(textfile) if textfile else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: ThreadingHTTPServer | None = None
        self._text = "edge_tsm_up 1\n"
        self._warned = False
        if listen:
            host, _, port = listen.rpartition(":")
            if not port.isdigit() or not host:
                raise ConfigError(f"metrics.listen {listen!r}: expected HOST:PORT such as 127.0.0.1:9108")
            handler = type("Handler", (_Handler,), {"text": staticmethod(lambda: self._text)})
            try:
                self._server = ThreadingHTTPServer((host, int(port)), handler)
            except OSError as e:
                raise DeviceError(f"metrics.listen {listen}: cannot listen ({e.strerror or e})") from None

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def start(self) -> None:
        if self._server is not None:
            threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True).start()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and the server, and write the final status (running: false); idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.write_once(final=True)

    def _run(self) -> None:
        self.write_once()
        while not self._stop.wait(self.interval_s):
            self.write_once()

    def write_once(self, final: bool = False) -> None:
        try:
            snap = self.snapshot()
        except Exception:  # noqa: BLE001 - metrics must never take the daemon down
            logger.exception("metrics: snapshot failed")
            return
        snap["running"] = not final
        self._text = prometheus_text(snap)
        try:
            if self.state_dir is not None:
                atomic_write(self.state_dir / STATUS_FILE, json.dumps(snap, indent=1), mode=0o644)
            if self.textfile is not None:  # read by node_exporter, another user: world-readable
                atomic_write(self.textfile, self._text, mode=0o644)
        except OSError as e:
            if not self._warned:
                logger.warning("metrics: cannot write (%s)", e)
                self._warned = True


def read_status(state_dir: Path) -> dict[str, Any]:
    """The daemon's last status, read as untrusted input: a regular file (no symlink followed, a FIFO never
    opened) of at most 16 MB holding the shape :func:`status_problem` checks; missing figures read as 0.

    Raises:
        InputError: no status file there (the daemon never ran with this state_dir), or it cannot be read.
        StateError: it is not the daemon's status: not a regular file, not JSON, or wrongly shaped (exit 65).
    """
    path = state_dir / STATUS_FILE
    try:
        data = read_regular(path, _STATUS_LIMIT)
        mtime = os.stat(path, follow_symlinks=False).st_mtime
    except FileNotFoundError:
        raise InputError(f"status {show_path(path)}: not there (is the daemon running with state_dir "
                         f"{show_path(state_dir)}?)") from None
    except NotRegular as e:
        raise StateError(f"status {show_path(path)}: {e.strerror}, not the daemon's status file; remove it (the "
                         "daemon writes a new one)") from None
    except OSError as e:
        raise InputError(f"status {show_path(path)}: unreadable ({e.strerror or e})") from None
    try:
        snap = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise StateError(f"status {show_path(path)}: not JSON ({short(str(e))}); the daemon rewrites it every "
                         "metrics.interval_s") from None
    problem = status_problem(snap)
    if problem:
        raise StateError(f"status {show_path(path)}: not the daemon's status ({problem}); is another program "
                         "writing there?")
    snap = _with_defaults(snap)
    snap["age_s"] = round(time.time() - mtime, 1)
    return snap


_STATUS_LIMIT = 16 << 20
_NUMBERS = {"cameras": ("fps", "frames_read", "classified", "skipped", "reconnects", "inference_ms_p50"),
            "sinks": ("delivered", "pending", "dropped", "errors"),
            "clips": ("written", "dropped", "failed", "removed", "bytes")}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(v), "a number")


def status_problem(snap: Any) -> str | None:
    """What is wrong with the shape of a status (``key.path: expected ..., got ...``), or None. Only what
    ``edge-tsm status`` shows is checked; keys it does not know are allowed, missing figures read as 0."""
    if not isinstance(snap, dict):
        return f"expected an object, got {_kind(snap)}"
    for key in ("uptime_s", "interval_s"):
        if key in snap and not _number(snap[key]):
            return f"{key}: expected a number, got {short(snap[key])}"
    if "running" in snap and not isinstance(snap["running"], bool):
        return f"running: expected true or false, got {short(snap['running'])}"
    for group, numbers in _NUMBERS.items():
        items = snap.get(group)
        if items is None:
            continue
        if group == "clips":
            items = {"": items}
        elif not isinstance(items, dict):
            return f"{group}: expected an object of names, got {_kind(items)}"
        for name, v in items.items():
            where = f"{group}.{name}" if name else group
            if not isinstance(v, dict):
                return f"{where}: expected an object, got {_kind(v)}"
            for k in numbers:
                if k in v and not _number(v[k]):
                    return f"{where}.{k}: expected a number, got {short(v[k])}"
            if v.get("state") is not None and not isinstance(v["state"], str):
                return f"{where}.state: expected a string, got {short(v['state'])}"
            events = v.get("events", {})
            if group == "cameras" and not (isinstance(events, dict) and all(map(_number, events.values()))):
                return f"{where}.events: expected an object of label: count, got {short(events)}"
            hist = v.get("inference_ms")
            if group == "cameras" and hist is not None and not _histogram(hist):
                return f"{where}.inference_ms: expected a histogram, got {short(hist)}"
    return None


def _histogram(h: Any) -> bool:
    return isinstance(h, dict) and all(isinstance(h.get(k), list) and all(map(_number, h[k]))
                                       for k in ("buckets_ms", "cumulative")) and \
        len(h["cumulative"]) == len(h["buckets_ms"]) + 1 and _number(h.get("sum_ms")) and _number(h.get("count"))


def _with_defaults(snap: dict[str, Any]) -> dict[str, Any]:
    """A checked status with every figure the views show (0 where missing, '?' for a missing state)."""
    out = dict(snap)
    for group, numbers in _NUMBERS.items():
        if group == "clips":
            if snap.get("clips") is not None:
                out["clips"] = {**dict.fromkeys(numbers, 0), **snap["clips"]}
            continue
        out[group] = {name: {**dict.fromkeys(numbers, 0), **v, "state": v.get("state") or "?"}
                      for name, v in (snap.get(group) or {}).items()}
    for v in out["cameras"].values():
        v.setdefault("events", {})
        v.setdefault("inference_ms", Histogram().snapshot())
    return out


def format_status(snap: dict[str, Any]) -> str:
    age = snap.get("age_s", 0.0)
    stale = not snap.get("running", True) or age > 3 * snap.get("interval_s", 5.0)
    head = (f"edge-tsm {'NOT RUNNING (last status ' + str(age) + ' s old)' if stale else 'running'}: "
            f"model {snap.get('model')} on {snap.get('engine')}, up {snap.get('uptime_s', 0):.0f} s")
    lines = [head, "", f"{'camera':<14}{'state':<14}{'fps':>7}{'classified':>12}{'skipped':>9}{'reconn':>8}"
             f"{'ms p50':>8}{'events':>8}"]
    for c, v in snap.get("cameras", {}).items():
        lines.append(f"{c:<14}{v['state']:<14}{v['fps']:>7.1f}{v['classified']:>12}{v['skipped']:>9}"
                     f"{v['reconnects']:>8}{v.get('inference_ms_p50', 0):>8.1f}{sum(v['events'].values()):>8}")
    lines += ["", f"{'sink':<14}{'state':<14}{'delivered':>10}{'pending':>9}{'dropped':>9}{'errors':>8}"]
    for s, v in snap.get("sinks", {}).items():
        lines.append(f"{s:<14}{v['state']:<14}{v['delivered']:>10}{v['pending']:>9}{v['dropped']:>9}{v['errors']:>8}")
        extra = [f"{v[k]} {k}" for k in ("reopened", "crashes") if _number(v.get(k)) and v[k]]
        if extra:
            lines[-1] += f"  ({', '.join(extra)})"
    c = snap.get("clips")
    if c:
        lines += ["", f"clips: {c['written']} written, {c['dropped']} dropped, {c['failed']} failed, "
                      f"{c['removed']} removed by the quota, spool {c['bytes'] / (1 << 20):.1f} MB"]
    return "\n".join(lines)


@dataclass
class StreamFigures:
    """One camera's figures, kept in one place: status lines, status.json and Prometheus all read these."""

    classified: int = 0
    events: int = 0
    by_label: dict[str, int] = field(default_factory=dict)
    hist: Histogram = field(default_factory=Histogram)             # step ms, cumulative (Prometheus)
    recent_ms: deque = field(default_factory=lambda: deque(maxlen=256))  # step ms, last frames (p50)

    def frame(self, ms: float) -> None:
        self.classified += 1
        self.hist.observe(ms)
        self.recent_ms.append(ms)

    def event(self, ev: Any) -> None:
        if ev.kind == "start":
            self.events += 1
            self.by_label[ev.label] = self.by_label.get(ev.label, 0) + 1

    def p50_ms(self) -> float:
        recent = sorted(self.recent_ms)
        return round(recent[len(recent) // 2], 3) if recent else 0.0
