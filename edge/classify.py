"""Classify a video file through the daemon's own loop: a lossless file camera in a :class:`Pipeline`.

Used by ``edge-tsm classify VIDEO``, ``eval-events`` and ``run --demo``. The file is read as the
daemon's file camera reads it (every k-th frame to the model at the bundle's rate, the others grabbed
without decoding; MJPG decoded at a reduced size when the model needs less), no frame is dropped, and
the events come from the same detector with the same settings, so what is measured here is what a
deployment runs. Event times are the file's own clock: ``start_time`` plus the frame's position.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import EventsConfig, config_from_data
from edge.errors import InputError, UsageError
from edge.events import Event
from edge.journal import MemoryJournal
from edge.pipeline import Pipeline
from edge.schema import NAME

logger = logging.getLogger(__name__)


@dataclass
class ClassifyResult:
    frames_read: int
    frames_classified: int
    events: list[Event]
    seconds: float
    fps: float

    @property
    def classify_fps(self) -> float:
        return self.frames_read / self.seconds if self.seconds > 0 else 0.0


def camera_name(path: Path, camera: str | None) -> str:
    """The events' camera name: ``camera``, else the file's name made to fit the config's name rule.

    Raises:
        UsageError: ``camera`` does not fit the rule.
    """
    if camera is not None:
        if not re.match(NAME, camera):
            raise UsageError(f"--camera {camera!r}: expected letters, digits, '_', '.', '-' (up to 64, "
                             "starting with a letter or digit)")
        return camera
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).lstrip("_.-")[:64]
    return name or "video"


def classify_video(video: str | Path, *, model: str = "default", engine: str = "onnxruntime",
                   precision: str | None = None, device: str = "CPU", threads: int | None = None,
                   events: EventsConfig | None = None, camera: str | None = None,
                   per_frame: str | Path | None = None, start_time: float | None = None,
                   on_event: Callable[[Event, int], None] | None = None,
                   decode_scale: str | int = "auto",
                   on_frame: Callable[[int, float, np.ndarray], None] | None = None) -> ClassifyResult:
    """Run one video file through the pipeline; call ``on_event(event, seq)`` as events happen and
    ``on_frame(index, ts, probs)`` with each classified frame's probabilities (what the event detector gets).

    Raises:
        InputError: the video is missing or cannot be decoded.
        ModelError, DeviceError, ConfigError: from the bundle and the engine.
    """
    path = Path(video)
    if not path.is_file():
        raise InputError(f"video {path}: no such file")
    name = camera_name(path, camera)
    engine_cfg = {"type": engine, "device": device, "precision": precision, "threads": threads, "max_batch": 1}
    cfg = config_from_data({"model": str(model), "engine": {k: v for k, v in engine_cfg.items() if v is not None},
                            "cameras": [{"name": name, "source": str(path), "type": "file",
                                         "decode_scale": decode_scale}],
                            "sinks": [], "status_interval_s": 0}, where="command line")
    if events is not None:
        cfg = cfg.model_copy(update={"events": events})
    found: list[Event] = []
    t0 = time.time() if start_time is None else start_time
    writer = None

    def frame(_cam: str, index: int, ts: float, probs: np.ndarray) -> None:
        if writer is not None:
            writer.writerow([index, f"{ts - t0:.3f}", *(f"{x:.5f}" for x in probs)])
        if on_frame is not None:
            on_frame(index, ts, probs)

    def event(ev: Event, seq: int) -> None:
        found.append(ev)
        if on_event is not None:
            on_event(ev, seq)

    p = Pipeline(cfg, MemoryJournal(), f"video {path}", on_frame=frame if per_frame or on_frame else None,
                 on_event=event, clock_start=t0)
    try:
        p.open()
    except InputError as e:
        prefix = f"camera {name}: "
        if not str(e).startswith(prefix):
            raise
        # the camera's message names the camera; the user gave a file
        raise InputError(f"video {path}: {str(e).removeprefix(prefix).removeprefix(f'{path}: ')}") from None
    stream = p.streams[0]
    fps = stream.camera.source.fps or p.bundle.temporal.fps
    started = time.perf_counter()
    try:
        with _csv(per_frame, p.bundle.labels) as writer:
            p.run(threading.Event())
        stats = stream.camera.stats()
        classified = stream.figures.classified
    finally:
        p.close(drain_s=0.0)
    elapsed = time.perf_counter() - started
    n = stats.get("frames_read", 0)
    if n == 0:
        raise InputError(f"video {path}: no frame could be decoded")
    logger.info("%s: %d frames (%d classified), %d events, %.1f frames/s", path.name, n, classified,
                len(found), n / elapsed if elapsed else 0.0)
    return ClassifyResult(n, classified, found, elapsed, fps)


@contextlib.contextmanager
def _csv(path: str | Path | None, labels: list[str]) -> Iterator[Any]:
    """A CSV writer for the per-frame probabilities (frame, time_s, one column per label), or None."""
    if not path:
        yield None
        return
    try:
        f = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except (OSError, ValueError) as e:
        raise InputError(f"--per-frame {path}: cannot write ({getattr(e, 'strerror', None) or e})") from None
    with f:
        w = csv.writer(f)
        w.writerow(["frame", "time_s", *labels])
        yield w
