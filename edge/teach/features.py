"""The user's clips and their features through the base graph, computed once per clip and kept in memory.

Clips are read from ``ROOT/<label>/*`` (the layout ``train`` reads and ``dataset from-clips`` /
``from-recording`` write; ``ROOT/background/`` is the optional background class). Each clip is decoded
once; the base graph without its classifier (:func:`edge.teach.graph.features_model`) runs through the
runtime engine frame by frame with its states, on the frames the daemon would give it (the first, then
every k-th at the bundle's rate), preprocessed by the runtime's own :class:`~edge.preprocess.Preprocessor`.

Views of a clip, each a real pass through the engine (features of a crop or a flip are not a function of
the clip's features, so nothing is faked in feature space):

* ``plain``: what the daemon sees (phase 0 of the every-k-th choice): the only view scored in the
  cross-validation;
* ``phase``: the same clip starting at frame 1, 2, ... k-1 (another, equally real, sampling of it);
* ``aug``: one crop/colour jitter (and flip, with the label swaps ``train`` knows) for the whole clip
  (:class:`edge.data.dataset.ClipAugment`);
* ``still``: one frame of the clip held for as many steps (a negative: the scene without the motion);
* ``motion``: a clip of other motion (:func:`motion_negatives`: the generator's own motions, kept only
  where they are unlike every clip of the user's classes), a negative.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.backends import Backend
from edge.bundle import Bundle
from edge.data.dataset import VIDEO_EXTS, ClipAugment, read_video, video_fps
from edge.errors import DataError, InputError
from edge.events import _BACKGROUND
from edge.preprocess import Preprocessor
from edge.teach.graph import FEATURES_OUT

logger = logging.getLogger(__name__)

BACKGROUND = "background"
Progress = Callable[[str, int, int], None]


class Cancelled(Exception):
    """The caller's cancel event was set."""


@dataclass
class Clip:
    path: Path
    label: str
    frames: np.ndarray          # T x H x W x 3 uint8 BGR (decoded once)
    fps: float


@dataclass
class ClipSet:
    root: Path
    labels: list[str]           # the user's classes, sorted, then background (always: teach makes negatives)
    clips: list[Clip]
    skipped: list[dict] = field(default_factory=list)   # {"path", "why"}
    user_background: int = 0    # clips in ROOT/background

    def counts(self) -> dict[str, int]:
        out = {lab: 0 for lab in self.labels}
        for c in self.clips:
            out[c.label] += 1
        return out


def _decode(path: Path) -> tuple[np.ndarray | None, float, str]:
    """(frames or None, fps (0 when the file does not say), why not)."""
    try:
        frames = read_video(path)
    except InputError as e:
        return None, 0.0, str(e).split(": ", 1)[-1]
    return frames, video_fps(path, default=0.0), ""


def read_clips(root: str | Path, progress: Progress | None = None, cancel: threading.Event | None = None) -> ClipSet:
    """Decode every clip of ``ROOT/<label>/*``; unreadable or empty videos are skipped (named, counted).

    Raises:
        InputError: ROOT is not a folder.
        DataError: fewer than 2 classes, a class with no readable clip, a label that clashes with
            the background class.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a folder (expected ROOT/<label>/*.mp4, the layout train reads)")
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"--data {root}: cannot be read ({e.strerror or e})") from None
    for d in dirs:
        if d.name != BACKGROUND and d.name.lower() in _BACKGROUND:
            raise DataError(f"--data {root}: class folder {d.name!r} clashes with the background class (events "
                            f"ignore it): move its clips into {BACKGROUND}/ or rename the folder")
    user = [d for d in dirs if d.name != BACKGROUND]
    if len(user) < 2:
        raise DataError(f"--data {root}: teach needs at least 2 classes (folders ROOT/<label>/ of clips), found "
                        f"{len(user)}{' (' + user[0].name + ')' if user else ''}"
                        + (f" besides {BACKGROUND}/" if len(user) < len(dirs) else ""))
    files = []
    for d in dirs:
        try:
            names = sorted(f for f in d.iterdir() if f.suffix.lower() in VIDEO_EXTS)
        except OSError as e:
            raise InputError(f"--data {d}: cannot be read ({e.strerror or e})") from None
        files += [(f, d.name) for f in names]
    clips: list[Clip] = []
    skipped: list[dict] = []
    for i, (f, label) in enumerate(files):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        frames, fps, why = _decode(f)
        if frames is None:
            logger.warning("teach: skipped %s: %s", f, why)
            skipped.append({"path": str(f), "why": why})
        else:
            clips.append(Clip(f, label, frames, fps))
        if progress is not None:
            progress("read", i + 1, len(files))
    labels = [d.name for d in user] + [BACKGROUND]  # always: teach adds negatives of its own
    have = {c.label for c in clips}
    for d in dirs:
        if d.name not in have:
            n = sum(1 for s in skipped if Path(s["path"]).parent == d)
            raise DataError(f"--data {root}: class folder {d.name}/ has no readable clip"
                            + (f" ({n} skipped: {skipped[-1]['why'] if n == 1 else 'see the warnings above'})"
                               if n else f" (no {'/'.join(VIDEO_EXTS)} file)"))
    return ClipSet(root, labels, clips, skipped, sum(1 for c in clips if c.label == BACKGROUND))


def model_step(bundle: Bundle, fps: float) -> int:
    """Every k-th frame of a ``fps`` video reaches the model, as the daemon's camera chooses it."""
    rate = bundle.temporal.fps / max(1, bundle.temporal.frame_stride)
    return max(1, round((fps or bundle.temporal.fps) / rate))


class Extractor:
    """Runs the features graph on frame sequences, states fed back, starting from zeros each time."""

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        self.pre = Preprocessor(bundle.input)
        self._zeros = {s.input: np.zeros(s.shape, np.float32) for s in bundle.states}
        self._pairs = [(s.input, s.output) for s in bundle.states]
        self.steps = 0

    def run(self, frames: np.ndarray) -> np.ndarray:
        """T x H x W x 3 BGR uint8 -> T x D float32 features."""
        feeds: dict[str, np.ndarray] = dict(self._zeros)
        out = []
        for frame in frames:
            feeds[self.bundle.input.name] = self.pre(frame)
            res = self.backend.run(feeds)
            for s_in, s_out in self._pairs:
                feeds[s_in] = res[s_out]
            out.append(res[FEATURES_OUT].reshape(-1))
        self.steps += len(frames)
        return np.stack(out).astype(np.float32)


@dataclass
class View:
    clip: int                   # index in ClipSet.clips
    kind: str                   # plain | phase | aug | still
    label: str
    features: np.ndarray        # T x D


def plan_views(clips: ClipSet, bundle: Bundle, phases: bool, augment: int, stills: bool) -> list[tuple[int, str, int]]:
    """(clip index, kind, phase or seed) for every pass to run."""
    jobs: list[tuple[int, str, int]] = []
    for i, c in enumerate(clips.clips):
        jobs.append((i, "plain", 0))
        k = model_step(bundle, c.fps)
        if phases:
            jobs += [(i, "phase", p) for p in range(1, k) if len(c.frames) > p]
        jobs += [(i, "aug", s) for s in range(augment)]
        if stills and c.label != BACKGROUND:
            jobs.append((i, "still", 0))
    return jobs


def extract(clips: ClipSet, bundle: Bundle, extractor: Extractor, jobs: list[tuple[int, str, int]], seed: int = 0,
            progress: Progress | None = None, cancel: threading.Event | None = None) -> list[View]:
    """Run each planned pass once (the features are then reused by every fold and every head)."""
    aug = ClipAugment(size=tuple(bundle.input.size), labels=clips.labels, resize=bundle.input.resize,
                      scale_range=(0.75, 1.0), jitter=0.2)
    views = []
    for n, (i, kind, arg) in enumerate(jobs):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        c = clips.clips[i]
        k = model_step(bundle, c.fps)
        label = c.label
        if kind == "plain":
            frames = c.frames[::k]
        elif kind == "phase":
            frames = c.frames[arg::k]
        elif kind == "still":
            seq = c.frames[::k]
            frames = np.repeat(seq[len(seq) // 2][None], len(seq), axis=0)
            label = BACKGROUND
        else:
            rng = np.random.default_rng([seed, i, arg])
            start = int(rng.integers(0, k))
            rgb, li = aug(c.frames[start::k], clips.labels.index(c.label), rng)
            frames, label = np.ascontiguousarray(rgb[..., ::-1]), clips.labels[li]
        views.append(View(i, kind, label, extractor.run(frames)))
        if progress is not None:
            progress("features", n + 1, len(jobs))
    return views


NEGATIVE_MOTIONS = ("swipe_left", "swipe_right", "swipe_up", "swipe_down", "zoom_in", "zoom_out", "rotate_cw",
                    "rotate_ccw")


def look_alikes(base_logits: Callable[[np.ndarray], np.ndarray], base_labels: list[str], views: list[View]) -> set[str]:
    """The base's labels that some taught class looks like: for each class, the base's prediction of each of
    its clips (mean softmax, as eval scores a clip); a base label predicted for a third of a class's clips."""
    out: set[str] = set()
    by_label: dict[str, list[int]] = {}
    for v in views:
        if v.kind == "plain" and v.label != BACKGROUND:
            z = base_logits(v.features)
            z = np.exp(z - z.max(1, keepdims=True))
            by_label.setdefault(v.label, []).append(int(np.argmax((z / z.sum(1, keepdims=True)).mean(0))))
    for preds in by_label.values():
        for p in set(preds):
            if preds.count(p) * 3 >= len(preds):
                out.add(base_labels[p])
    return out


def motion_negatives(clips: ClipSet, bundle: Bundle, extractor: Extractor, views: list[View], per_motion: int,
                     seed: int = 0, cancel: threading.Event | None = None,
                     skip: set[str] = frozenset()) -> tuple[list[View], int]:
    """Background views of other motion: ``per_motion`` clips of each of the generator's motions
    (:data:`NEGATIVE_MOTIONS`, the newest generator at the model's input size and rate), minus those that
    look like a user's class: the motions in ``skip`` (:func:`look_alikes`: the base takes a taught class
    for them), and any candidate whose mean features are as close (cosine) to some user clip as that
    clip's class's clips are to each other (the median of their nearest same-class neighbours), so a user
    who teaches a swipe is not told that swipes are background.
    Returns (kept views, number dropped)."""
    from edge.data.synth import GENERATOR_VERSION, render_clip
    gen = GENERATOR_VERSION  # the newest: scenes with photographs, distractors, an arm (5), else procedural (4)
    h, w = bundle.input.size
    steps = bundle.temporal.clip_frames
    k = max(1, bundle.temporal.frame_stride)
    user = [v for v in views if v.kind == "plain" and v.label != BACKGROUND]
    if not user:
        return [], 0

    def unit(f: np.ndarray) -> np.ndarray:
        m = f[1:].mean(0) if len(f) > 1 else f[0]
        return m / (np.linalg.norm(m) + 1e-9)
    mu = np.stack([unit(v.features) for v in user])
    sim = mu @ mu.T
    np.fill_diagonal(sim, -np.inf)
    labs = np.array([v.label for v in user])
    near = [sim[i, labs == labs[i]].max() for i in range(len(user)) if (labs == labs[i]).sum() > 1]
    bar = float(np.median(near)) if near else 1.0
    kept, dropped = [], 0
    for m, label in enumerate(NEGATIVE_MOTIONS):
        if label in skip:
            continue
        for i in range(per_motion):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            frames = render_clip(label, np.random.default_rng([seed, 7919, m, i]), (w, h), steps * k,
                                 generator=gen)[::k]
            f = extractor.run(frames)
            if float((mu @ unit(f)).max()) >= bar:
                dropped += 1
                continue
            kept.append(View(-1 - len(kept), "motion", BACKGROUND, f))
    return kept, dropped
