"""Field clips for annotation: a ring of recent frames per camera, short clips on triggers, a spool.

A deployed classifier is the best source of its next training data if it keeps the moments it was
unsure about. Each camera gets a :class:`ClipRecorder`:

* the capture thread hands it every frame it reads (:meth:`ClipRecorder.tap`, before the camera's
  every-k-th decimation), and it keeps them at the clip rate (default: the model's training fps, so a
  clip becomes training data at the rate the model expects), scaled down to ``width``, in a ring of
  ``pre_s`` seconds;
* the inference loop hands it each classified frame's scores and events
  (:meth:`ClipRecorder.observe`): an ``event`` trigger opens a clip at the event's start minus
  ``pre_s`` and closes it ``post_s`` after its end; an ``uncertain`` trigger opens one when the top
  smoothed score has sat in ``[low, high)`` for ``min_s`` and closes it ``post_s`` after it left the
  band. No clip is longer than ``max_s``.

A closed clip goes to the :class:`ClipSpool`, one writer thread for all cameras, which writes
``<camera>/<time>-<trigger>-<label>.avi`` (MJPG) or ``.mp4`` (mp4v) and then its sidecar ``.json``
(camera, times, model name and SHA-256, labels, per-frame scores, predicted label); both are written
under a temporary name and renamed, so a clip with a sidecar is complete. After each clip the spool
is trimmed to ``max_mb``, oldest first. The writer's queue is bounded: when the disk is slower than
the triggers, clips are dropped (counted), never the frames of the classifier.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import ClipsConfig
from edge.events import Event, iso_ts
from edge.util import atomic_write, file_sha256

logger = logging.getLogger(__name__)

SIDECAR_VERSION = 1
VIDEO_SUFFIX = {"mjpg": ".avi", "mp4v": ".mp4"}
FOURCC = {"mjpg": "MJPG", "mp4v": "mp4v"}
_QUEUE = 4                 # closed clips waiting for the writer; more are dropped
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class PendingClip:
    """A clip being collected: frames from the ring and the tap, scores from the inference loop."""

    camera: str
    trigger: str
    start_t: float                  # first frame kept (trigger time - pre_s)
    end_t: float                    # last frame kept; math.inf until the trigger is over
    limit_t: float                  # start_t + max_s
    fps: float = 15.0               # the rate the tap keeps frames at
    label: str | None = None        # the event's label (event trigger)
    event_id: str | None = None
    frames: list[tuple[float, np.ndarray, int]] = field(default_factory=list)   # (ts, image, index)
    scores: list[tuple[float, np.ndarray]] = field(default_factory=list)


class ClipSpool:
    """Writes closed clips and their sidecars into ``folder`` and keeps the folder under its quota."""

    def __init__(self, folder: str | Path, cfg: ClipsConfig, model: dict[str, Any], labels: list[str]) -> None:
        self.folder = Path(folder)
        self.cfg = cfg
        self.model = model
        self.labels = list(labels)
        self.max_bytes = int(cfg.max_mb * (1 << 20))
        self._q: queue.Queue[PendingClip | None] = queue.Queue(_QUEUE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = self.removed = 0
        self.bytes = 0

    def open(self) -> None:
        """Create the folder (and check it is writable), remove leftovers of an interrupted write.

        Raises:
            InputError: the folder cannot be created or written.
        """
        from edge.state import ensure_writable
        ensure_writable(self.folder, "clips.dir")
        for cam in _scan(self.folder):  # leftovers of an interrupted write (never through a symlinked folder)
            for entry in _scan(Path(cam.path)) if cam.is_dir(follow_symlinks=False) else ():
                if entry.name.startswith(".") and ".tmp" in entry.name:
                    Path(entry.path).unlink(missing_ok=True)
        self._trim()
        self._thread = threading.Thread(target=self._run, name="clip-writer", daemon=True)
        self._thread.start()
        logger.info("clips: spool %s, %.0f MB quota, %d clip(s) there now (%.1f MB)", self.folder,
                    self.cfg.max_mb, len(self._clips()), self.bytes / (1 << 20))

    def submit(self, clip: PendingClip, wait_s: float = 0.0) -> bool:
        """Queue a closed clip for writing, waiting up to ``wait_s`` for room (a file source read as fast
        as possible waits: it loses nothing); False (counted, logged) when the writer stays behind."""
        try:
            self._q.put(clip, timeout=wait_s) if wait_s > 0 else self._q.put_nowait(clip)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            logger.warning("clips: writer behind, clip of camera %s (%s) dropped", clip.camera, clip.trigger)
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within ``timeout``), then stop the writer."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._q.put(None, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                    "removed": self.removed, "bytes": self.bytes, "pending": self._q.qsize()}

    # --- writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            clip = self._q.get()
            if clip is None:
                return
            try:
                self._write(clip)
            except Exception:  # noqa: BLE001 - one bad clip must not end the spool
                with self._lock:
                    self.failed += 1
                logger.exception("clips: writing a clip of camera %s failed", clip.camera)

    def _write(self, clip: PendingClip) -> None:
        frames = [f for f in clip.frames if clip.start_t <= f[0] <= clip.end_t]
        if not frames:
            return
        cfg = self.cfg
        cam_dir = self.folder / _SAFE.sub("_", clip.camera)
        t0 = frames[0][0]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t0)) + f"{t0 % 1:.3f}"[1:] + "Z"
        what = clip.label or _predicted(clip.scores, self.labels)[0] or "unknown"
        stem = f"{stamp}-{clip.trigger}-{_SAFE.sub('_', what)}"
        suffix = VIDEO_SUFFIX[cfg.codec]
        video = cam_dir / f"{stem}{suffix}"
        tmp: Path | None = None
        h, w = frames[0][1].shape[:2]
        fps = clip.fps
        span = frames[-1][0] - t0
        if len(frames) > 2 and span > 0 and (len(frames) - 1) / span < 0.9 * fps:
            fps = round((len(frames) - 1) / span, 2)   # the camera delivered fewer: keep the clip's real speed
        try:  # OpenCV writes the video to a path: a hidden name, renamed when whole (the sidecar: atomic_write)
            cam_dir.mkdir(parents=True, exist_ok=True)
            if cam_dir.is_symlink() or not cam_dir.is_dir():  # never written (or trimmed) through a link
                raise OSError(f"{cam_dir} is not a folder of the spool (a symbolic link?); move it away")
            fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=cam_dir)  # O_EXCL|O_NOFOLLOW
            os.close(fd)
            tmp = Path(name)
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC[cfg.codec]), fps, (w, h))
            if not writer.isOpened():
                raise OSError(f"OpenCV cannot write {cfg.codec} to {tmp}")
            try:
                for _, img, _ in frames:
                    writer.write(img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h)))
            finally:
                writer.release()
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise OSError("nothing was written (disk full?)")
            os.replace(tmp, video)
            label, score = _predicted(clip.scores, self.labels, clip.label)
            side = {"v": SIDECAR_VERSION, "clip": f"{cam_dir.name}/{video.name}", "camera": clip.camera,
                    "trigger": clip.trigger, "start_ts": iso_ts(t0), "end_ts": iso_ts(frames[-1][0]),
                    "duration_s": round(frames[-1][0] - t0, 3), "fps": fps, "frames": len(frames), "width": w,
                    "height": h, "codec": cfg.codec, "source_frames": [frames[0][2], frames[-1][2]],
                    "model": self.model, "labels": self.labels,
                    "predicted": label, "event_id": clip.event_id,
                    "predicted_score": None if score is None else round(score, 4),
                    "scores": {"t": [round(t - t0, 3) for t, _ in clip.scores],
                               "probs": [[round(float(x), 4) for x in p] for _, p in clip.scores]}}
            atomic_write(video.with_suffix(".json"), json.dumps(side, separators=(",", ":")) + "\n", mode=0o644)
        except OSError as e:
            try:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            except OSError:
                pass
            with self._lock:
                self.failed += 1
            logger.warning("clips: clip %s of camera %s not kept: %s", stem, clip.camera, e.strerror or e)
            return
        with self._lock:
            self.written += 1
        logger.info("clips: kept %s (%d frames, %.1f s, %s)", side["clip"], len(frames), side["duration_s"],
                    clip.trigger)
        self._trim()

    def _clips(self) -> list[tuple[float, Path, int]]:
        """(mtime, video, bytes of video + sidecar) of every complete or orphaned clip, oldest first."""
        out = []
        # folders and files only, never through a symlink: the quota must not remove files elsewhere
        cams = [Path(e.path) for e in _scan(self.folder) if e.is_dir(follow_symlinks=False)]
        for cam_dir in cams:
            for entry in _scan(cam_dir):
                f = Path(entry.path)
                if f.name.startswith(".") or f.suffix not in (".avi", ".mp4", ".json") or \
                        not entry.is_file(follow_symlinks=False):
                    continue
                if f.suffix == ".json" and any(f.with_suffix(s).exists() for s in (".avi", ".mp4")):
                    continue  # counted with its video
                try:
                    st = f.lstat()
                    size = st.st_size
                    side = f.with_suffix(".json")
                    if f.suffix != ".json" and side.exists():
                        size += side.lstat().st_size
                except OSError:
                    continue
                out.append((st.st_mtime, f, size))
        out.sort(key=lambda x: (x[0], x[1].name))
        return out

    def _trim(self) -> None:
        clips = self._clips()
        total = sum(size for _, _, size in clips)
        removed = 0
        for _, f, size in clips:
            if total <= self.max_bytes:
                break
            for p in {f, f.with_suffix(".json")}:
                try:
                    p.unlink(missing_ok=True)
                except OSError as e:
                    logger.warning("clips: cannot remove %s: %s", p, e.strerror or e)
            total -= size
            removed += 1
        with self._lock:
            self.bytes = total
            self.removed += removed
        if removed:
            logger.info("clips: quota %.0f MB: removed the %d oldest clip(s)", self.cfg.max_mb, removed)


def _scan(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` (none when it is not there or not a folder)."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _predicted(scores: list[tuple[float, np.ndarray]], labels: list[str],
               label: str | None = None) -> tuple[str | None, float | None]:
    """The clip's label and score: an event's label with that label's peak per-frame score (what the event
    detector saw; the clip's mean also counts its pre- and post-roll, 0.2-0.35 for events that peaked over 0.9),
    else the argmax of the mean of its per-frame scores and that mean."""
    if not scores:
        return label, None
    probs = np.asarray([p for _, p in scores])
    if label in labels:
        i = labels.index(label)
        return label, float(probs[:, i].max())
    mean = probs.mean(axis=0)
    i = int(np.argmax(mean))
    return labels[i], float(mean[i])


class ClipRecorder:
    """One camera's ring of recent frames and its open clips (see the module docstring)."""

    def __init__(self, camera: str, cfg: ClipsConfig, spool: ClipSpool, labels: list[str], fps: float,
                 lossless: bool = False) -> None:
        self.camera = camera
        self.wait_s = 60.0 if lossless else 0.0   # non-live sources wait for the writer instead of dropping
        self.cfg = cfg
        self.spool = spool
        self.labels = list(labels)
        self.fps = fps
        # The ring reaches back pre_s before a trigger's start, which is itself behind the frame that fires
        # it: by min_s for the unsure band, by the event detector's confirmation frames (1 s margin) for events.
        back = cfg.pre_s + 1.0 + (cfg.uncertain.min_s if "uncertain" in cfg.triggers else 0.0)
        self._ring: collections.deque[tuple[float, np.ndarray, int]] = collections.deque(
            maxlen=max(2, int(math.ceil(back * fps)) + 2))
        self._lock = threading.Lock()
        self._open: list[PendingClip] = []
        self._next_t = -math.inf    # the next frame the tap keeps (decimation to the clip rate)
        self._band_since: float | None = None
        self._band_clip: PendingClip | None = None
        self._last_uncertain = -math.inf
        self._events: dict[str, PendingClip] = {}
        self._scores: collections.deque[tuple[float, np.ndarray]] = collections.deque(
            maxlen=max(8, int(math.ceil(back * fps)) + 8))
        self.triggered = 0

    # --- capture thread -----------------------------------------------------------------------------
    def tap(self, img: np.ndarray, ts: float, gap: bool, index: int = -1) -> None:
        """Every frame the camera reads: capture time (the classifier's clock), gap flag, frame index."""
        if gap:  # a reconnect or a file loop: what came before does not belong to what follows
            self._next_t = -math.inf
            self.flush()
            with self._lock:
                self._ring.clear()
        if ts + 0.25 / self.fps < self._next_t:
            return
        self._next_t = max(self._next_t + 1.0 / self.fps, ts) if self._next_t > -math.inf else ts + 1.0 / self.fps
        w = self.cfg.width
        if w and img.shape[1] > w:  # otherwise kept as is: sources hand over a fresh array per frame
            h = max(2, int(round(img.shape[0] * w / img.shape[1])) // 2 * 2)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        closed = []
        with self._lock:
            self._ring.append((ts, img, index))
            for clip in self._open:
                clip.frames.append((ts, img, index))
                if ts >= min(clip.end_t, clip.limit_t):
                    closed.append(clip)
            for clip in closed:
                self._close(clip, ts)
        for clip in closed:
            self.spool.submit(clip, self.wait_s)

    # --- inference loop -----------------------------------------------------------------------------
    def observe(self, ts: float, probs: np.ndarray, smoothed: np.ndarray, events: list[Event]) -> None:
        """One classified frame: its scores (kept with the open clips) and the events it caused."""
        row = probs  # the classifier's fresh array (kept as is; rounded only when a sidecar is written)
        with self._lock:
            self._scores.append((ts, row))
            for clip in self._open:
                if ts >= clip.start_t:
                    clip.scores.append((ts, row))
            # a clip opened now takes this frame's scores from the ring (_start)
            if "event" in self.cfg.triggers:
                for ev in events:
                    self._on_event(ev, ts)
            if "uncertain" in self.cfg.triggers:
                self._on_scores(ts, float(np.max(smoothed)))

    def flush(self) -> None:
        """The camera stops: close every open clip with what it holds."""
        with self._lock:
            closed, self._open = self._open, []
            self._events.clear()
            self._band_clip = None
        for clip in closed:
            clip.end_t = min(clip.end_t, clip.frames[-1][0] if clip.frames else clip.start_t)
            self.spool.submit(clip, self.wait_s)

    def reset_scores(self) -> None:
        """The classifier's states were reset (a capture gap): forget the scores and the unsure period."""
        with self._lock:
            self._scores.clear()
            self._band_since = None

    # --- triggers (under the lock) --------------------------------------------------------------------
    def _start(self, trigger: str, since: float, label: str | None = None, event_id: str | None = None) -> PendingClip:
        start = since - self.cfg.pre_s
        clip = PendingClip(self.camera, trigger, start, math.inf, start + self.cfg.max_s, self.fps, label, event_id)
        clip.frames = [f for f in self._ring if f[0] >= start]
        clip.scores = [(t, p) for t, p in self._scores if t >= start]
        self._open.append(clip)
        self.triggered += 1
        return clip

    def _close(self, clip: PendingClip, now: float) -> None:
        if clip in self._open:
            self._open.remove(clip)
        clip.end_t = min(clip.end_t, clip.limit_t, now)
        if clip is self._band_clip:
            self._band_clip = None
        for k, v in list(self._events.items()):
            if v is clip:
                del self._events[k]

    def _on_event(self, ev: Event, ts: float) -> None:
        if self.cfg.labels is not None and ev.label not in self.cfg.labels:
            return
        if ev.kind == "start":
            self._events[ev.id] = self._start("event", min(ev.start_ts, ts), ev.label, ev.id)
        elif ev.kind == "end" and ev.id in self._events:
            clip = self._events.pop(ev.id)
            clip.end_t = ts + self.cfg.post_s

    def _on_scores(self, ts: float, top: float) -> None:
        u = self.cfg.uncertain
        inside = u.low <= top < u.high
        if inside:
            if self._band_since is None:
                self._band_since = ts
            if self._band_clip is not None:
                self._band_clip.end_t = math.inf  # back in the band: keep going
            elif ts - self._band_since >= u.min_s and ts - self._last_uncertain >= u.cooldown_s:
                self._band_clip = self._start("uncertain", self._band_since)
                self._last_uncertain = ts
        else:
            self._band_since = None
            if self._band_clip is not None and self._band_clip.end_t == math.inf:
                self._band_clip.end_t = ts + self.cfg.post_s


def open_spool(cfg: Any, bundle: Any, precision: str, where: str = "config") -> ClipSpool:
    """The field-clip spool of config ``clips``, opened (:func:`make_spool`, then :meth:`ClipSpool.open`).

    Raises:
        ConfigError: a ``clips.labels`` entry is not a model label.
        InputError: the folder cannot be written.
    """
    spool = make_spool(cfg, bundle, precision, where)
    spool.open()
    return spool


def make_spool(cfg: Any, bundle: Any, precision: str, where: str = "config") -> ClipSpool:
    """The field-clip spool of config ``clips``, not opened yet (a reload checks it while the running spool
    writes): its folder (default ``<state dir>/clips``), the model it names in each sidecar.

    Raises:
        ConfigError: a ``clips.labels`` entry is not a model label.
    """
    from edge.errors import ConfigError
    from edge.state import state_dir
    c = cfg.clips
    for name in c.labels or ():
        if name not in bundle.labels:
            raise ConfigError(f"{where}: clips.labels: {name!r} is not a label of model {bundle.name!r} "
                              f"(labels: {', '.join(bundle.labels)})")
    folder = Path(c.dir) if c.dir else Path(state_dir(cfg)) / "clips"
    graph = bundle.graph_path(precision)
    model = {"name": bundle.name, "graph": graph.name, "precision": precision, "sha256": file_sha256(graph),
             "folder": str(bundle.root)}
    return ClipSpool(folder, c, model, bundle.labels)
