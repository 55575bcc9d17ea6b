"""Live: one camera through its own :class:`edge.pipeline.Pipeline`, its frames, scores and events polled
by the page; the last minute's scores kept to show what other ``events:`` thresholds would do.

The pipeline is the daemon's loop with the camera's config (a camera of ``--config``), a V4L2 device or
a file played in real time and looped. The page polls (``GET /api/live/ID?since=K``): scores and events
after cursor K. The latest frame is the one the model was handed (kept by wrapping the camera's
capture-thread preprocessing, so no frame is decoded for the page alone) and encoded only when asked.
A V4L2 camera has one owner: while the daemon holds it, opening fails and the page says so.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import re
import threading
import time
from typing import Any

import numpy as np

from edge.errors import CaptureError, EdgeError
from edge.studio.media import encode
from edge.studio.scores import Scores, replay, rounded, settings_json
from edge.studio.settings import StudioError, StudioSettings

logger = logging.getLogger(__name__)

KEEP_S = 60.0
_DEVICE = re.compile(r"^/dev/video\d{1,3}$")


class LiveSession:
    def __init__(self, sid: str, cfg: Any, scores: Scores, what: str) -> None:
        from edge.journal import MemoryJournal
        from edge.pipeline import Pipeline
        self.id = sid
        self.what = what
        self.scores = scores
        self.cfg = cfg
        self.error: str | None = None
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._n = itertools.count()
        self._rows: collections.deque[tuple[int, float, np.ndarray]] = collections.deque()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._t0: float | None = None
        self._img: np.ndarray | None = None
        self._img_seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self.frames = 0
        self._times: collections.deque[float] = collections.deque(maxlen=60)
        self.p = Pipeline(cfg, MemoryJournal(), what, on_frame=self._frame, on_event=self._event)
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self.p.open()
        self.bundle = self.p.bundle
        self.settings = self.p.settings
        cam = self.p.streams[0].camera
        inner = cam.prepare

        def prepare(img: np.ndarray) -> Any:  # the capture thread: keep the frame the model is handed
            with self._lock:
                self._img, self._img_seq = img, self._img_seq + 1
            return inner(img) if inner is not None else None
        cam.prepare = prepare
        self._thread = threading.Thread(target=self._run, name=f"studio-live-{self.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            why = self.p.run(self.stop_event)
            if why == "ended":
                self.error = "the source ended"
        except EdgeError as e:
            self.error = str(e)
            logger.warning("live %s: %s", self.what, e)
        except Exception as e:  # noqa: BLE001 - the server goes on; the page shows the line
            self.error = f"{type(e).__name__}: {e}"
            logger.exception("live %s failed", self.what)
        finally:
            try:
                self.p.close(drain_s=0.0)
            except Exception:  # noqa: BLE001
                logger.exception("live %s: closing failed", self.what)

    def _frame(self, _cam: str, _index: int, ts: float, probs: np.ndarray) -> None:
        now = time.monotonic()
        with self._lock:
            if self._t0 is None:
                self._t0 = ts
            t = ts - self._t0
            self._rows.append((next(self._n), t, np.array(probs, np.float32)))
            while self._rows and self._rows[0][1] < t - KEEP_S:
                self._rows.popleft()
            self.frames += 1
            self._times.append(now)

    def _event(self, ev: Any, _seq: int) -> None:
        with self._lock:
            t0 = self._t0 if self._t0 is not None else ev.ts
            self._events.append({"n": next(self._n), "event": ev.kind, "id": ev.id, "label": ev.label,
                                 "score": round(ev.score, 4), "t": round(ev.ts - t0, 3),
                                 "start": round(ev.start_ts - t0, 3)})

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self, since: int) -> dict[str, Any]:
        with self._lock:
            rows = [r for r in self._rows if r[0] >= since]
            events = [e for e in self._events if e["n"] >= since]
            nxt = max([r[0] + 1 for r in rows[-1:]] + [e["n"] + 1 for e in events[-1:]] + [since])
            times = list(self._times)
            seq = self._img_seq
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {"id": self.id, "running": self.running, "error": self.error, "frames": self.frames,
                "fps": round(fps, 2), "next": nxt, "t": [round(r[1], 3) for r in rows],
                "probs": [np.round(r[2].astype(np.float64), 4).tolist() for r in rows], "events": events,
                "frame_seq": seq}

    def jpeg(self) -> tuple[int, bytes]:
        with self._lock:
            img, seq, hit = self._img, self._img_seq, self._jpeg
        if img is None:
            raise StudioError(404, f"live {self.id}: no frame yet")
        if hit is not None and hit[0] == seq:
            return hit
        data = (seq, encode(img))
        with self._lock:
            self._jpeg = data
        return data

    def replay(self, events: Any) -> dict[str, Any]:
        with self._lock:
            rows = list(self._rows)
        settings = self.scores.settings(self.bundle, events, "events")
        t = np.array([r[1] for r in rows], np.float64)
        probs = np.stack([r[2] for r in rows]) if rows else np.zeros((0, len(self.bundle.labels)), np.float32)
        return {"events": rounded(replay(self.bundle.labels, settings, t, probs)),
                "settings": settings_json(settings), "seconds": round(float(t[-1] - t[0]), 2) if len(t) > 1 else 0.0}

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)


class Live:
    """At most one live session; starting one stops the previous."""

    def __init__(self, s: StudioSettings, scores: Scores, config: Any | None) -> None:
        self.s = s
        self.scores = scores
        self.config = config
        self.session: LiveSession | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def sources(self) -> dict[str, Any]:
        from edge.devices import cameras
        from edge.studio.library import recordings
        cams = [{"name": c.name, "source": c.source, "type": c.type}
                for c in (self.config.cameras if self.config else [])]
        devices = [c["path"] for c in cameras(probe=False) if c.get("index", 0) == 0]
        return {"cameras": cams, "devices": devices, "files": [r["path"] for r in recordings(self.s)]}

    def camera(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if body.get("camera") is not None:
            cams = {c.name: c for c in (self.config.cameras if self.config else [])}
            if body["camera"] not in cams:
                raise StudioError(404, f"camera {body['camera']!r}: not a camera of the config "
                                       f"({', '.join(cams) or 'none: start the studio with --config FILE'})")
            from edge.config import normalise_camera_source
            cam = cams[body["camera"]]
            out = cam.model_dump(exclude_none=True)
            kind, _ = normalise_camera_source(cam)
            if kind == "file":   # watched, not measured: played at its rate, again and again
                out.update(loop=True, realtime=True)
            out["at_start"] = "require"
            return out, f"camera {body['camera']}"
        src = body.get("source")
        if isinstance(src, str) and _DEVICE.match(src):
            return {"name": "live", "source": src, "type": "v4l2", "at_start": "require"}, f"camera {src}"
        path = self.s.resolve(src, what="source")
        return ({"name": "live", "source": str(path), "type": "file", "loop": True, "realtime": True},
                f"file {src}")

    def start(self, body: dict[str, Any]) -> LiveSession:
        from edge.config import config_from_data
        cam, what = self.camera(body)
        b = self.scores.bundle("default")
        engine = {k: v for k, v in self.s.engine.items() if k != "max_batch"}
        data = {"model": str(b.root), "engine": engine, "cameras": [cam], "sinks": [], "status_interval_s": 0}
        if self.scores.events is not None:
            data["events"] = self.scores.events.model_dump(exclude_none=True)
        cfg = config_from_data(data, where="studio live")
        with self._lock:
            if self.session is not None:
                self.session.stop()
                self.session = None
            sess = LiveSession(f"l{next(self._ids)}", cfg, self.scores, what)
            try:
                sess.open()
            except CaptureError as e:
                src = str(cam.get("source", ""))
                if (cam.get("type") == "v4l2" or src.startswith("/dev/video")) and os.path.exists(src):
                    raise StudioError(503, f"{e}; a V4L2 camera has one owner: if the edge-tsm daemon runs with "
                                           "it, stop it first (systemctl stop edge-tsm)") from None
                raise StudioError(503, str(e)) from None
            except EdgeError as e:
                raise StudioError(422, str(e)) from None
            self.session = sess
        logger.info("live %s: %s with model %s", sess.id, what, b.name)
        return sess

    def get(self, sid: str) -> LiveSession:
        sess = self.session
        if sess is None or sess.id != sid:
            raise StudioError(404, f"live session {sid!r}: not running (start one)")
        return sess

    def stop(self) -> str | None:
        with self._lock:
            sess, self.session = self.session, None
        if sess is None:
            return None
        sess.stop()
        return sess.id
