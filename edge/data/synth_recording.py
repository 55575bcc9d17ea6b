"""A generated "field recording" from generator 5: ONE continuous scene, no cut inside it.

The same object (held by the same arm, over the same background, among the same distractors, under
slowly drifting light) holds still, then makes a motion, holds still again, and so on: each motion
starts where the last one ended, chosen among the classes asked for that fit from there (the one used
least so far first). ``eval-events`` on it then measures the model rather than scene cuts: generator 4's
recording (:func:`edge.demo.make_recording`) cut to a new scene at every motion, and most false events
fell just after a cut.

Motions last 18 to 33 frames and stills 12 to 27 (1.2 to 2.2 s and 0.8 to 1.8 s at 15 fps), so durations
vary as in real footage.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge.data.occluders import check_distractors
from edge.data.synth_classes import CLASSES, resolve_classes
from edge.data.synth_motion import NoRoom, State, trajectory
from edge.data.synth_scene import Scene
from edge.demo import Segment
from edge.errors import DataError, InputError

logger = logging.getLogger(__name__)

RENDER_SIZE = (160, 120)  # what a scene is drawn at (the training clips' size), then resized to the output
_KEYS = ("cx", "cy", "size", "angle", "yaw", "pitch")


def plan_recording(rng: np.random.Generator, classes: tuple[str, ...], segments: int,
                   size: tuple[int, int] = RENDER_SIZE) -> tuple[dict, list[tuple[str, int, int]]]:
    """The object's per-frame state over the whole recording and its ``(label, first, end)`` frame spans
    (end exclusive; stills are ``no_motion``), starting and ending on a still.

    Raises:
        DataError: no motion among ``classes``, or none of them fits from where the object is.
    """
    w, h = size
    motions = [c for c in classes if c != "no_motion"]
    if not motions:
        raise DataError(f"synthetic recording: classes {', '.join(classes)} hold no motion")
    short = min(w, h)
    state = State(float(rng.uniform(0.35, 0.65) * w), float(rng.uniform(0.35, 0.65) * h),
                  float(rng.uniform(0.25, 0.35) * short), float(rng.uniform(-180, 180)),
                  float(rng.uniform(-15, 15)), float(rng.uniform(-10, 10)))
    parts: list[dict] = []
    spans: list[tuple[str, int, int]] = []
    used = dict.fromkeys(motions, 0)
    n = 0

    def add(label: str, frames: int, traj: dict) -> None:
        nonlocal n, state
        part = {k: traj[k][1:] for k in _KEYS}  # frame 0 is the state the last part ended in
        parts.append(part)
        spans.append((label, n, n + frames))
        n += frames
        state = State(*(float(part[k][-1]) for k in _KEYS))

    def still() -> None:
        frames = 3 * int(rng.integers(4, 10))  # whole fifths of a second at 15 fps: exact times in the CSV
        add("no_motion", frames, trajectory("no_motion", rng, w, h, frames + 1, start=state))

    still()
    for _ in range(segments):
        frames = 3 * int(rng.integers(6, 12))
        order = sorted(motions, key=lambda c: (used[c], rng.random()))
        for label in order:
            try:
                traj = trajectory(label, rng, w, h, frames + 1, start=state)
            except NoRoom:
                continue
            used[label] += 1
            add(label, frames, traj)
            break
        else:
            raise DataError(f"synthetic recording: none of {', '.join(motions)} fits from where the object is "
                            f"(centre {state.cx:.0f},{state.cy:.0f}, size {state.size:.0f} px): give classes that "
                            "move both ways")
        still()
    traj = {k: np.concatenate([p[k] for p in parts]) for k in _KEYS}
    traj["present"] = True
    traj["label"] = None
    return traj, spans


def render_recording(seed: int | tuple[int, ...], segments: int, classes: tuple[str, ...] = CLASSES,
                     size: tuple[int, int] = RENDER_SIZE, difficulty: float | None = None,
                     distractors: float | None = None):
    """``(scene, spans)``: the recording's :class:`Scene` (``scene.frame(i)`` for ``i < scene.n``) and its spans.
    ``seed``: an int (``synth-recording --seed``) or a tuple (a training set's ``(seed, i)``: other scenes).
    ``distractors``: the chance the scene has moving distractors (``None``: 0.25 + 0.5 x difficulty; the same
    draw either way, so a recording without them is the one it was)."""
    rng = np.random.default_rng([*(seed if isinstance(seed, tuple) else (seed,)), 5])
    d = float(rng.uniform(0.1, 0.5)) if difficulty is None else float(np.clip(difficulty, 0, 1))
    traj, spans = plan_recording(rng, classes, segments, size)
    return Scene(rng, size[0], size[1], traj, d, distractors=distractors), spans


def make_recording(path: str | Path, annotations: str | Path, *, segments: int = 24, seed: int | tuple[int, ...] = 11,
                   fps: float = 15.0, size: tuple[int, int] = (640, 480),
                   classes: str | list[str] | None = None, distractors: float | None = None) -> list[Segment]:
    """Write the recording (MJPG .avi at ``size``, drawn at 160x120) and its ``start,end,label`` rows (stills as
    ``no_motion``, back to back from 0 to the end of the video); return the rows.

    Raises:
        DataError: ``segments`` < 1, or classes that are unknown or hold no motion.
        InputError: the video or the CSV cannot be written.
    """
    if segments < 1:
        raise DataError(f"synthetic recording: segments must be >= 1, got {segments}")
    check_distractors(distractors)
    labels = resolve_classes(classes)
    scene, spans = render_recording(seed, segments, labels, distractors=distractors)
    path = Path(path)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not vw.isOpened():
        raise InputError(f"synthetic recording {path}: cannot be written (OpenCV VideoWriter with MJPG failed)")
    try:
        for i in range(scene.n):
            f = scene.frame(i)
            vw.write(f if f.shape[1::-1] == tuple(size) else cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
    finally:
        vw.release()
    rows = [Segment(label, a / fps, b / fps) for label, a, b in spans]
    try:
        with open(annotations, "w", encoding="utf-8") as f:
            f.write("start,end,label\n")
            for seg in rows:
                f.write(f"{seg.start_s:.3f},{seg.end_s:.3f},{seg.label}\n")
    except OSError as e:
        raise InputError(f"synthetic recording annotations {annotations}: cannot be written: {e.strerror}") from None
    logger.debug("synthetic recording %s: %d motions in one scene, %.1f s", path, segments, rows[-1].end_s)
    return rows


def _write_training_recording(job: tuple[Path, int, int, int, tuple[int, int], float, tuple[str, ...],
                                          float | None]) -> None:
    path, seed, i, segments, size, fps, classes, distractors = job
    make_recording(path, path.with_suffix(".csv"), segments=segments, seed=(seed, i), fps=fps, size=size,
                   classes=list(classes), distractors=distractors)


def generate_recordings(folder: str | Path, count: int, seed: int, segments: int, *,
                        size: tuple[int, int] = RENDER_SIZE, fps: float = 15.0, classes: tuple[str, ...] = CLASSES,
                        workers: int = 1, distractors: float | None = None) -> list[Path]:
    """``count`` recordings for training (``folder/rec_s<seed>_<i:05d>.avi`` + ``.csv``, drawn at ``size``), each
    one continuous scene of ``segments`` motions from ``(seed, i)``: the same files for any ``workers``.
    ``distractors``: see :func:`render_recording`.

    Raises:
        DataError: ``count`` or ``segments`` < 1, classes without a motion.
        InputError: the folder or a file cannot be written.
    """
    if count < 1 or segments < 1:
        raise DataError(f"synthetic recordings: count and segments must be >= 1, got {count} and {segments}")
    check_distractors(distractors)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {folder}: {e}") from None
    jobs = [(folder / f"rec_s{seed}_{i:05d}.avi", int(seed), i, int(segments), tuple(size), float(fps), tuple(classes),
             distractors) for i in range(count)]
    if workers <= 1:
        for job in jobs:
            _write_training_recording(job)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from edge.data.synth_writer import _worker_init
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("forkserver"),
                                 initializer=_worker_init) as ex:
            list(ex.map(_write_training_recording, jobs))
    logger.info("wrote %d synthetic recordings (%d motions each) to %s", count, segments, folder)
    return [job[0] for job in jobs]
