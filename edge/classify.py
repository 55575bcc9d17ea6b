"""Classify a video file through the runtime path: decode -> preprocess -> online model -> events.

Used by ``edge-tsm classify VIDEO`` and ``edge-tsm run --demo``. The file is stepped at the bundle's
rate: every ``frame_step`` th frame (from the file's fps, the bundle's trained fps and frame stride),
as the daemon does with a camera. Event times are the file's own clock: ``start_time`` plus the
frame's position in the video.
"""
from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.backends import create_backend
from edge.bundle import Bundle, load_bundle
from edge.capture.opencv import FileSource
from edge.classifier import OnlineClassifier
from edge.config import CameraConfig
from edge.errors import InputError
from edge.events import EventDetector, EventSettings, Thresholds
from edge.preprocess import frame_need

logger = logging.getLogger(__name__)


def frame_step(source_fps: float, bundle: Bundle) -> int:
    """Every how many source frames the graph takes one (>= 1)."""
    t = bundle.temporal
    if not source_fps or source_fps <= 0:
        return max(1, t.frame_stride)
    return max(1, round(source_fps / t.fps * t.frame_stride))


def default_event_settings(bundle: Bundle) -> EventSettings:
    """Event settings that suit a bundle's decision rate when the user gives none.

    About half a second of smoothing at the rate the graph runs; ``no_motion``-like background
    labels (``no_motion``, ``No gesture``, ``Doing other things``) are ignored. Online bundles (with
    temporal states) skip their first 0.6 s after a start or a gap (the zero-state transient).
    """
    rate = bundle.temporal.fps / max(1, bundle.temporal.frame_stride)
    window = max(2, round(rate * 0.6))
    warmup = round(rate * 0.6) if bundle.states else 0
    background = {"no_motion", "no gesture", "doing other things", "background", "none"}
    ignore = tuple(lab for lab in bundle.labels if lab.lower() in background)
    return EventSettings(window=window, defaults=Thresholds(enter=0.6, exit=0.4, min_frames=2, cooldown_s=0.5),
                         ignore=ignore, warmup=warmup)


@dataclass
class ClassifyResult:
    frames_read: int
    frames_classified: int
    events: list[dict[str, Any]]
    seconds: float
    fps: float

    @property
    def classify_fps(self) -> float:
        return self.frames_read / self.seconds if self.seconds > 0 else 0.0


def classify_video(video: str | Path, *, model: str = "default", engine: str = "onnxruntime",
                   precision: str | None = None, device: str = "CPU", threads: int | None = None,
                   settings: EventSettings | None = None, camera: str | None = None,
                   per_frame: str | Path | None = None, start_time: float | None = None,
                   on_event: Callable[[dict[str, Any]], None] | None = None,
                   decode_scale: str | int = "auto") -> ClassifyResult:
    """Run one video file; call ``on_event`` for each event as it happens and return a summary.

    Raises:
        InputError: the video is missing or cannot be decoded.
        ModelError, DeviceError, ConfigError: from the bundle and the engine.
    """
    path = Path(video)
    if not path.is_file():
        raise InputError(f"video {path}: no such file")
    bundle = load_bundle(model)
    backend = create_backend(engine, bundle.graph_path(precision), device=device, threads=threads)
    logger.info("model %s: %s graph %s (%s)", bundle.name, (precision or bundle.precision).upper(),
                bundle.graph_path(precision).name, "--precision" if precision else "the bundle's default")
    # decoded as the daemon's file camera does (MJPG at a reduced size when the model needs less)
    src = FileSource(CameraConfig(name=camera or "video", source=str(path), decode_scale=decode_scale), str(path))
    src.need = frame_need(bundle.input)
    try:
        src.open()
    except InputError as e:
        backend.close()
        raise InputError(f"video {path}: {str(e).removeprefix(src.where + ': ')}") from None
    fps = src.fps or bundle.temporal.fps
    step = frame_step(fps, bundle)
    clf = OnlineClassifier(bundle, backend)
    det = EventDetector(bundle.labels, settings or default_event_settings(bundle), camera=camera or path.stem)
    t0 = time.time() if start_time is None else start_time
    events: list[dict[str, Any]] = []

    def emit(evs: list[dict[str, Any]]) -> None:
        for ev in evs:
            events.append(ev)
            if on_event is not None:
                on_event(ev)

    writer = csv_file = None
    if per_frame:
        csv_file = open(per_frame, "w", newline="", encoding="utf-8")
        writer = csv.writer(csv_file)
        writer.writerow(["frame", "time_s", *bundle.labels])
    n = classified = 0
    started = time.perf_counter()
    try:
        while True:
            if n % step:
                if not src.skip():
                    break
                n += 1
                continue
            frame = src.read()
            if frame is None:
                break
            probs = clf.step(frame)
            classified += 1
            pos = n / fps
            emit(det.update(probs, t0 + pos))
            if writer is not None:
                writer.writerow([n, f"{pos:.3f}", *(f"{p:.5f}" for p in probs)])
            n += 1
        if n == 0:
            raise InputError(f"video {path}: no frame could be decoded")
        emit(det.flush(t0 + n / fps))
    finally:
        src.close()
        backend.close()
        if csv_file is not None:
            csv_file.close()
    elapsed = time.perf_counter() - started
    logger.info("%s: %d frames (%d classified, every %d), %d events, %.1f frames/s", path.name, n, classified, step,
                len(events), n / elapsed if elapsed else 0.0)
    return ClassifyResult(n, classified, events, elapsed, fps)
