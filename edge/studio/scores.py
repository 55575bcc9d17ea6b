"""Per-frame scores for the timeline, computed by the runtime through the one frame loop, cached on disk.

A video runs as ``classify`` runs it: a lossless file camera in an :class:`edge.pipeline.Pipeline`
(every k-th frame to the model at the bundle's rate, preprocessing in the capture thread, the engine of
the studio's config). The probabilities of each classified frame (exact float32) are kept in
``<cache>/studio/<video sha>-<graph sha>-<engine>-<precision>.npz``, so a changed file or model is
computed again and nothing else is. Events are not cached: they are replayed from the scores through
:class:`edge.events.EventDetector` with the settings asked for (the daemon's detector is pure and gets
the same probabilities at the same times, so the events are the ones the pipeline emits; a test checks it).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge.bundle import Bundle, load_bundle
from edge.config import EventsConfig, config_from_data
from edge.errors import EdgeError
from edge.events import EventSettings, event_settings
from edge.studio.settings import StudioError, StudioSettings
from edge.util import atomic_write, file_sha256

logger = logging.getLogger(__name__)


def events_section(data: Any, where: str = "events") -> EventsConfig:
    """A page's ``events:`` object validated as the config's section; 400 naming the key otherwise."""
    from edge.schema import format_errors
    if not isinstance(data, dict):
        raise StudioError(400, f"{where}: expected an object (the config's events: section)")
    try:
        return EventsConfig.model_validate(data)
    except ValidationError as e:
        raise StudioError(400, format_errors(e, EventsConfig, where, limit=3)) from None


def settings_json(st: EventSettings) -> dict[str, Any]:
    d = dataclasses.asdict(st)
    out = {"window": d["window"], "smoothing": d["smoothing"], "ema_alpha": d["ema_alpha"], "warmup": d["warmup"],
           **d["defaults"], "ignore": list(d["ignore"]), "classes": d["classes"]}
    return out


def replay(labels: list[str], settings: EventSettings, t: np.ndarray, probs: np.ndarray) -> list[dict[str, Any]]:
    """The events the detector gives on these scores, paired as eval-events pairs them (``start``: the
    first frame of the run that made it, ``fired``: when the start event fired, ``end``; seconds). An
    event still open at the last frame ends there."""
    from edge.evalevents import pair_events
    return pair_events(replay_scored(labels, settings, t, probs)[1])


def replay_scored(labels: list[str], settings: EventSettings, t: np.ndarray, probs: np.ndarray) -> tuple[list, list]:
    """:func:`edge.evalevents.replay` of these scores: the smoothed scores per frame and the events, one pass."""
    from edge.evalevents import replay as detector_replay
    return detector_replay(list(zip(np.asarray(t).tolist(), probs, strict=True)), labels, settings, camera="studio")


def rounded(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "start": round(e["start"], 3), "fired": round(e["fired"], 3), "end": round(e["end"], 3)}
            for e in events]


class Scores:
    """The scores cache and the models it can run (``default``: the studio's, ``work/bundles/NAME``)."""

    def __init__(self, s: StudioSettings, events: EventsConfig | None = None) -> None:
        self.s = s
        self.events = events
        self._sha: dict[tuple, str] = {}
        self._bundles: dict[str, tuple[tuple, Bundle]] = {}
        self._lock = threading.Lock()
        self._run = threading.Lock()      # one pipeline at a time: the machine's cores are the daemon's too
        self._folder: Path | None = None

    # --- models ---------------------------------------------------------------------------------------
    def bundle(self, ref: str | None = None) -> Bundle:
        """``default``: the server's ``--model``; ``builtin``: the project's built-in bundle (the same one
        when ``--model`` was not given); ``work/bundles/NAME``: one taught in this studio."""
        ref = ref or "default"
        if ref in ("default", "builtin"):
            target: str | Path = self.s.model if ref == "default" else "default"
        else:
            folder = self.s.resolve(ref, kind="dir", what="model")
            if self.s.api_path(folder, "work") is None:
                raise StudioError(404, f"model {ref!r}: expected default, builtin or work/bundles/NAME")
            target = folder
        yaml = Path(target) / "model.yaml"
        sig = (str(target), *(_stat(yaml) if yaml.exists() else ()))
        with self._lock:
            hit = self._bundles.get(ref)
            if hit is not None and hit[0] == sig:
                return hit[1]
        try:
            b = load_bundle(target)
        except EdgeError as e:
            raise StudioError(422, str(e)) from None
        with self._lock:
            self._bundles[ref] = (sig, b)
        return b

    def bundles(self) -> list[dict[str, Any]]:
        """The models the page can choose from: the server's, the built-in one (when ``--model`` is another),
        then every folder under ``work/bundles/`` by name (one that does not load: its ``error``)."""
        refs = ["default"] + ([] if self.s.model == "default" else ["builtin"])
        root = self.s.folder("work") / "bundles"
        try:
            refs += [f"work/bundles/{p.name}" for p in sorted(root.iterdir(), key=lambda p: p.name)
                     if p.is_dir() and not p.name.startswith(".")]
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StudioError(422, f"{root}: cannot read ({e.strerror or e})") from None
        out = []
        for ref in refs:
            try:
                b = self.bundle(ref)
                made = _stat(b.root / "model.yaml")[1] / 1e9
            except StudioError as e:
                out.append({"path": ref, "name": ref.rsplit("/", 1)[-1], "error": str(e)})
                continue
            taught = b.provenance.get("taught") if isinstance(b.provenance.get("taught"), dict) else {}
            accuracy = (taught.get("cross_validation") or {}).get("accuracy")
            out.append({"path": ref, "name": b.name, "labels": list(b.labels), "precision": b.precision,
                        "folder": str(b.root), "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(made)),
                        "base": taught.get("base"), "accuracy": accuracy, "error": None})
        return out

    def settings(self, b: Bundle, events: EventsConfig | None = None, where: str = "config events") -> EventSettings:
        try:
            return event_settings(events if events is not None else self.events, b, where)
        except EdgeError as e:
            raise StudioError(400, str(e)) from None

    # --- hashes and the cache folder ----------------------------------------------------------------------
    def sha(self, path: Path) -> str:
        key = (str(path), *_stat(path))
        with self._lock:
            if key in self._sha:
                return self._sha[key]
        h = file_sha256(path)
        with self._lock:
            self._sha[key] = h
        return h

    def folder(self) -> Path:
        if self._folder is None:
            from edge.cache import cache_folder, private_folder
            base = self.s.cache_dir or cache_folder(self.s.engine.get("cache_dir"))[0] / "studio"
            self._folder = private_folder(base, "studio cache folder")
        return self._folder

    # --- scores ---------------------------------------------------------------------------------------
    def scores(self, video: Path, ref: str | None = None, cancel: threading.Event | None = None) -> dict[str, Any]:
        """``labels, fps, frames, index, t, probs`` (arrays) and ``cached``.

        Raises:
            Cancelled: ``cancel`` was set while the scores were computed (nothing is cached then).
        """
        from edge.cache import read_private
        b = self.bundle(ref)
        precision = self.s.engine.get("precision") or b.precision
        eng = self.s.engine
        key = (f"{self.sha(video)[:24]}-{self.sha(b.graph_path(precision))[:24]}-{eng.get('type', 'onnxruntime')}-"
               f"{str(eng.get('device', 'CPU')).replace('/', '_')}-{precision}.npz")
        path = self.folder() / key
        raw = read_private(path)
        if raw is None:
            with self._run:
                raw = read_private(path)   # computed meanwhile by another request
                if raw is None:
                    raw = self._compute(video, b, precision, cancel)
                    atomic_write(path, raw, mode=0o600)
                    cached = False
                else:
                    cached = True
        else:
            cached = True
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            out = {k: z[k] for k in ("index", "t", "probs")}
            fps, frames = float(z["fps"]), int(z["frames"])
        return {**out, "labels": list(b.labels), "fps": fps, "frames": frames, "cached": cached, "bundle": b}

    def _compute(self, video: Path, b: Bundle, precision: str, cancel: threading.Event | None = None) -> bytes:
        from edge.journal import MemoryJournal
        from edge.pipeline import Pipeline
        engine = {k: v for k, v in self.s.engine.items() if k in ("type", "device", "threads", "cache_dir",
                                                               "precision_hint", "allow_fallback")}
        cfg = config_from_data({"model": str(b.root), "engine": {**engine, "precision": precision, "max_batch": 1},
                                "cameras": [{"name": "studio", "source": str(video), "type": "file"}],
                                "sinks": [], "status_interval_s": 0}, where="studio")
        rows: list[tuple[int, float, np.ndarray]] = []

        def frame(_cam: str, index: int, ts: float, probs: np.ndarray) -> None:
            rows.append((index, ts, np.array(probs, np.float32)))

        p = Pipeline(cfg, MemoryJournal(), f"video {video.name}", on_frame=frame, clock_start=0.0)
        try:
            p.open()
        except EdgeError as e:
            raise StudioError(422, f"video {video.name}: {str(e).split(': ', 1)[-1]}") from None
        try:
            stream = p.streams[0]
            fps = stream.camera.source.fps or b.temporal.fps
            p.run(cancel or threading.Event())   # a set cancel stops the frame loop like a daemon's stop
            n = stream.camera.stats().get("frames_read", 0)
        finally:
            p.close(drain_s=0.0)
        if cancel is not None and cancel.is_set():
            from edge.studio.jobs import Cancelled
            raise Cancelled()
        if not rows:
            raise StudioError(422, f"video {video.name}: no frame could be decoded")
        logger.info("scores: %s, %d frames (%d classified) with %s", video.name, n, len(rows), b.name)
        buf = io.BytesIO()
        np.savez(buf, index=np.array([r[0] for r in rows], np.int64), t=np.array([r[1] for r in rows], np.float64),
                 probs=np.stack([r[2] for r in rows]), fps=np.float64(fps), frames=np.int64(n))
        return buf.getvalue()


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as e:
        raise StudioError(404, f"{path.name}: {e.strerror or e}") from None
    return st.st_size, st.st_mtime_ns


def timeline(data: dict[str, Any], settings: EventSettings) -> dict[str, Any]:
    """The JSON of ``GET /api/scores``: rounded scores and the replayed events."""
    return {"model": data["bundle"].name, "labels": data["labels"], "fps": data["fps"], "frames": data["frames"],
            "cached": data["cached"], "index": data["index"].tolist(), "t": np.round(data["t"], 3).tolist(),
            "probs": np.round(data["probs"].astype(np.float64), 4).tolist(),
            "events": rounded(replay(data["labels"], settings, data["t"], data["probs"])),
            "settings": settings_json(settings)}
