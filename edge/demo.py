"""``edge-tsm run --demo``: a generated camera clip with known motions, classified by a bundle.

The clip strings together procedural motion segments (``edge.data.synth``) separated by still
stretches, upscaled to 640x480 like a camera's frames and written as MJPG, then runs through the
same path as ``classify``. The script of what was shown goes to stderr so the events on stdout can
be checked against it by eye.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import InputError

DEMO_SCRIPT = ("swipe_left", "zoom_in", "rotate_cw", "swipe_down", "zoom_out", "swipe_right")


@dataclass(frozen=True)
class Segment:
    label: str
    start_s: float
    end_s: float


def make_demo_clip(path: str | Path, *, seed: int = 7, fps: float = 15.0, size: tuple[int, int] = (640, 480),
                   motion_frames: int = 24, still_frames: int = 18,
                   script: tuple[str, ...] = DEMO_SCRIPT) -> list[Segment]:
    """Write the demo clip to ``path`` (MJPG .avi) and return the motion segments it shows.

    Raises:
        InputError: the file cannot be written.
    """
    from edge.data.synth import render_clip
    path = Path(path)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not vw.isOpened():
        raise InputError(f"demo clip {path}: cannot be written (OpenCV VideoWriter with MJPG failed)")
    rng = np.random.default_rng(seed)
    segments: list[Segment] = []
    n = 0
    # Each motion is one scene: the object waits still before it moves and after, so the scene changes
    # (cuts) fall between still stretches, never into a motion, as with a person stepping up to a camera.
    lead, tail = still_frames // 2, still_frames - still_frames // 2
    try:
        for k, label in enumerate(script):
            frames = render_clip(label, rng, frames=motion_frames)
            held = [frames[0]] * (lead if k else still_frames) + list(frames) + [frames[-1]] * tail
            start = n + (lead if k else still_frames)
            segments.append(Segment(label, start / fps, (start + len(frames)) / fps))
            for f in held:
                vw.write(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
            n += len(held)
    finally:
        vw.release()
    return segments


def make_recording(path: str | Path, annotations: str | Path, *, segments: int = 24, seed: int = 11,
                   fps: float = 15.0, size: tuple[int, int] = (640, 480)) -> list[Segment]:
    """A generated "field recording": ``segments`` random motions between still stretches, written like
    the demo clip, and its ground truth as ``start,end,label`` rows (still stretches as ``no_motion``).

    For trying the field loop (clips, review, ``dataset from-recording``) without a camera.
    """
    from edge.data.synth import CLASSES
    rng = np.random.default_rng(seed)
    motions = [lab for lab in CLASSES if lab != "no_motion"]
    script = tuple(motions[i] for i in rng.integers(0, len(motions), segments))
    shown = make_demo_clip(path, seed=seed, fps=fps, size=size, script=script)
    rows, t = [], 0.0
    for seg in shown:
        if seg.start_s > t:
            rows.append(Segment("no_motion", t, seg.start_s))
        rows.append(seg)
        t = seg.end_s
    rows.append(Segment("no_motion", t, t + (18 - 18 // 2) / fps))  # make_demo_clip ends on a held last frame
    with open(annotations, "w", encoding="utf-8") as f:
        f.write("start,end,label\n")
        for seg in rows:
            f.write(f"{seg.start_s:.3f},{seg.end_s:.3f},{seg.label}\n")
    return rows
