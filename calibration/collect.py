"""``edge-tsm calibrate collect``: calibration sets from recordings (or rendered clips), see :mod:`.calibset`.

From recordings: each video is read at the bundle's rate (every ``frame_step``-th frame, as the
daemon reads a camera). A frame-difference score (mean absolute difference of small grey thumbnails
between consecutive graph frames) finds keyframes: local peaks above ``min_diff``. A segment of
``segment`` graph frames is cut around each keyframe (half before it, so the states build up over the
lead-in), segments never overlap, and they are taken round-robin over the videos, best first, until
``max_frames``. A video with no keyframe gives one segment from its middle, so a static camera is
still represented but static stretches never dominate.

Rendered (``--synth``): clips of every class from :func:`edge.data.synth.render_clip` with seed 2
(training uses seed 0 and the held-out set seed 1), one segment per clip: the reproducible default
calibration set of the embedded model.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import Bundle
from edge.calibration.calibset import SegmentRef, write_manifest, write_segment
from edge.calibration.progress import bar
from edge.data.dataset import VIDEO_EXTS
from edge.errors import DataError, InputError, UsageError

logger = logging.getLogger(__name__)

THUMB_W = 64                      # width of the grey thumbnails the frame difference is taken on
SYNTH = {"size": (160, 120), "frames": 24, "fps": 15.0}   # the default recipe's clips (models/recipe.py)
RESERVED_SEEDS = {0: "the training set", 1: "the held-out test set"}


def frame_step(source_fps: float, bundle: Bundle) -> int:
    """Every how many source frames the graph takes one (>= 1), as the daemon's Camera passes frames on
    at the model's decision rate (``temporal.fps / frame_stride``)."""
    t = bundle.temporal
    if not source_fps or source_fps <= 0:
        return max(1, t.frame_stride)
    return max(1, round(source_fps / (t.fps / max(1, t.frame_stride))))


@dataclass(frozen=True)
class CollectOptions:
    max_frames: int = 600         # size limit of the whole set, in graph frames
    segment: int = 16             # graph frames per segment (2 x the default clip length)
    min_diff: float = 2.0         # keyframe threshold: mean |difference| of thumbnails, 0..255 scale
    max_side: int = 640           # frames larger than this are downscaled (INTER_AREA); 0 keeps them

    def check(self) -> None:
        """Raises: UsageError: a value out of range."""
        if self.max_frames < 1:
            raise UsageError(f"--max-frames {self.max_frames}: expected >= 1")
        if self.segment < 2:
            raise UsageError(f"--segment {self.segment}: expected >= 2 graph frames (states need a sequence)")
        if self.min_diff < 0:
            raise UsageError(f"--min-diff {self.min_diff}: expected >= 0")
        if self.max_side and self.max_side < 16:
            raise UsageError(f"--max-side {self.max_side}: expected 0 (keep) or >= 16 pixels")


def graph_fps(bundle: Bundle) -> float:
    """Frames per second the graph runs at: the bundle's fps divided by its frame stride."""
    return bundle.temporal.fps / max(1, bundle.temporal.frame_stride)


# --- sources --------------------------------------------------------------------------------------------
def list_videos(sources: list[str | Path]) -> list[Path]:
    """Video files from files and folders (searched recursively), in a stable order.

    Raises:
        InputError: a source does not exist, or nothing is a video.
    """
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTS)
            if not found:
                raise InputError(f"calibrate --from {p}: no video files ({'/'.join(VIDEO_EXTS)}) in this folder")
            out += found
        else:
            raise InputError(f"calibrate --from {p}: no such file or folder")
    if not out:
        raise InputError("calibrate: no recordings given (--from VIDEO_OR_DIR)")
    return out


def _sampled(path: Path, bundle: Bundle) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    """The frame step for this file and an iterator of (graph frame index, BGR frame).

    Raises:
        DataError: OpenCV cannot open the file.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"video {path}: cannot be opened by OpenCV (not a video, or a codec it lacks)")
    step = frame_step(cap.get(cv2.CAP_PROP_FPS), bundle)
    return step, _read(cap, step)


def _read(cap: Any, step: int) -> Iterator[tuple[int, np.ndarray]]:
    try:
        i = k = 0
        while True:
            if i % step == 0:
                ok, frame = cap.read()
                if not ok:
                    return
                yield k, frame
                k += 1
            elif not cap.grab():
                return
            i += 1
    finally:
        cap.release()


def diff_scores(path: Path, bundle: Bundle) -> tuple[np.ndarray, int]:
    """Frame-difference score of each graph frame (0 for the first) and the frame step.

    Raises:
        DataError: the video cannot be opened or yields no frame.
    """
    scores: list[float] = []
    prev: np.ndarray | None = None
    step, frames = _sampled(path, bundle)
    for k, frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise DataError(f"video {path}: frame {k} is not a 3-channel image ({list(frame.shape)})")
        h, w = frame.shape[:2]
        th = max(1, round(h * THUMB_W / w))
        grey = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (THUMB_W, th), interpolation=cv2.INTER_AREA)
        g = grey.astype(np.float32)
        scores.append(0.0 if prev is None else float(np.abs(g - prev).mean()))
        prev = g
    if not scores:
        raise DataError(f"video {path}: no frame decoded")
    return np.asarray(scores, np.float32), step


def pick_segments(scores: np.ndarray, segment: int, min_diff: float) -> list[tuple[int, int, float]]:
    """Non-overlapping (start, length, score) windows around keyframes, best first.

    A keyframe is a local maximum of ``scores`` (within half a segment) of at least ``min_diff``; its
    window starts half a segment before it. Without any keyframe: one window from the middle, score 0.
    """
    n = len(scores)
    length = min(segment, n)
    r = max(1, length // 2)
    peaks = [i for i in range(1, n) if scores[i] >= min_diff and scores[i] >= scores[max(0, i - r):i + r + 1].max()]
    peaks.sort(key=lambda i: (-float(scores[i]), i))
    chosen: list[tuple[int, int, float]] = []
    for i in peaks:
        start = int(np.clip(i - r, 0, n - length))
        if all(start + length <= s or s + ln <= start for s, ln, _ in chosen):
            chosen.append((start, length, float(scores[i])))
    if not chosen:
        chosen.append(((n - length) // 2, length, 0.0))
    return chosen


def _budget(ranked: list[list[tuple[int, int, float]]], max_frames: int) -> list[list[tuple[int, int, float]]]:
    """Take windows round-robin over the videos (best first) until ``max_frames``; the last may be cut short."""
    kept: list[list[tuple[int, int, float]]] = [[] for _ in ranked]
    left = max_frames
    for rank in range(max((len(r) for r in ranked), default=0)):
        for v, windows in enumerate(ranked):
            if rank >= len(windows) or left <= 0:
                continue
            start, length, score = windows[rank]
            if length > left and left < max(2, length // 2):
                left = 0
                continue
            length = min(length, left)
            kept[v].append((start, length, score))
            left -= length
    return kept


def _fit(frame: np.ndarray, max_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _prepare_out(out: str | Path) -> Path:
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"calibrate --out {root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        stale = list(root.glob("seg_*.npz")) + list(root.glob("calib.json"))
        if len(stale) != sum(1 for _ in root.iterdir()):
            raise InputError(f"calibrate --out {root}: folder holds other files; give a new or empty folder")
        for f in stale:  # an earlier calibration set: replace it
            f.unlink()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"calibrate --out {root}: cannot create ({e})") from None
    return root


# --- the two collectors ---------------------------------------------------------------------------------
def collect_videos(sources: list[str | Path], out: str | Path, bundle: Bundle, opts: CollectOptions = CollectOptions(),
                   progress: bool = False) -> dict[str, Any]:
    """Build a set from recordings; return the summary (also written into calib.json).

    Raises:
        UsageError: an option out of range.
        InputError: a source or the output folder is missing or unusable.
        DataError: a video cannot be decoded.
    """
    opts.check()
    videos = list_videos(sources)
    root = _prepare_out(out)
    scored = [diff_scores(v, bundle) for v in bar(videos, enabled=progress, desc="scanning", unit="video")]
    ranked = [pick_segments(s, opts.segment, opts.min_diff) for s, _ in scored]
    kept = _budget(ranked, opts.max_frames)
    refs: list[SegmentRef] = []
    per_video: list[dict[str, Any]] = []
    nbytes = 0
    for v, (path, windows) in enumerate(zip(videos, kept, strict=False)):
        scores, step = scored[v]
        per_video.append({"path": str(path), "graph_frames": len(scores), "step": step, "segments": len(windows),
                          "frames": sum(w[1] for w in windows), "static": bool(windows) and windows[0][2] == 0.0})
        if not windows:
            continue
        wanted = {k: j for j, (s, ln, _) in enumerate(windows) for k in range(s, s + ln)}
        frames: dict[int, list[np.ndarray]] = {j: [] for j in range(len(windows))}
        last = max(wanted)
        reader = _sampled(path, bundle)[1]
        for k, frame in reader:
            if k in wanted:
                frames[wanted[k]].append(_fit(frame, opts.max_side))
            if k >= last:
                reader.close()  # releases the capture
                break
        for j, (s, ln, score) in sorted(enumerate(windows), key=lambda jw: jw[1][0]):
            if len(frames[j]) != ln:
                raise DataError(f"video {path}: decoded {len(frames[j])} frames of segment at graph frame {s}, "
                                f"expected {ln} (the file changed, or its decoder is not repeatable)")
            name, size = write_segment(root, len(refs), np.stack(frames[j]))
            refs.append(SegmentRef(name, ln, str(path), s * step, step, round(score, 3)))
            nbytes += size
    summary = _summary(root, bundle, refs, nbytes, {"kind": "recordings", "videos": per_video,
                                                    "options": vars(opts)})
    write_manifest(root, graph_fps(bundle), refs, summary)
    logger.info("calibration set %s: %d segments, %d frames from %d videos", root, len(refs),
                summary["frames"], len(videos))
    return summary


def collect_synth(out: str | Path, bundle: Bundle, *, per_class: int = 8, seed: int = 2, max_frames: int = 600,
                  progress: bool = False, generator: int | None = None) -> dict[str, Any]:
    """Render ``per_class`` clips of every synthetic class (seed ``seed``), one segment each, by ``generator``
    (default: the one the bundle was trained on).

    Raises:
        UsageError: ``per_class`` < 1 or a negative seed.
        InputError: the output folder is unusable.
    """
    from edge.data.synth import CLASSES, render_clip
    if per_class < 1 or seed < 0 or max_frames < 1:
        raise UsageError(f"--per-class {per_class} / --seed {seed} / --max-frames {max_frames}: expected >= 1, "
                         ">= 0, >= 1")
    if seed in RESERVED_SEEDS:
        logger.warning("synth seed %d renders %s: calibrating on it leaks those clips (the default is 2)", seed,
                       RESERVED_SEEDS[seed])
    root = _prepare_out(out)
    gen = bundle.synth_generator if generator is None else int(generator)
    step = frame_step(SYNTH["fps"], bundle)
    refs: list[SegmentRef] = []
    nbytes = frames = 0
    jobs = [(k, label, i) for i in range(per_class) for k, label in enumerate(CLASSES)]  # classes interleaved
    for k, label, i in bar(jobs, enabled=progress, desc="rendering", unit="clip"):
        if frames >= max_frames:
            break
        clip = render_clip(label, np.random.default_rng([seed, k, i]), SYNTH["size"], SYNTH["frames"],
                           generator=gen)[::step]
        clip = clip[:max_frames - frames]
        name, size = write_segment(root, len(refs), clip)
        refs.append(SegmentRef(name, len(clip), f"synth:{label}:{seed}:{i}", 0, step, 0.0))
        nbytes += size
        frames += len(clip)
    summary = _summary(root, bundle, refs, nbytes, {"kind": "synth", "seed": seed, "per_class": per_class,
                                                    "generator": gen, **SYNTH,
                                                    "size": list(SYNTH["size"])})
    write_manifest(root, graph_fps(bundle), refs, summary)
    logger.info("calibration set %s: %d rendered clips, %d frames (seed %d)", root, len(refs), frames, seed)
    return summary


def _summary(root: Path, bundle: Bundle, refs: list[SegmentRef], nbytes: int, source: dict[str, Any]) -> dict[str, Any]:
    lengths = [r.frames for r in refs]
    return {"out": str(root), "model": bundle.name, "graph_fps": graph_fps(bundle), "segments": len(refs),
            "frames": sum(lengths), "segment_frames": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
            "bytes": nbytes, "source": source}
