"""Measuring teach (docs/teach.md): clip sets of motions the default model never saw, and a still scene.

``python -m edge.teach.measure motions --out DIR --per-class N --seed S`` writes ``DIR/<label>/*.avi``
(1.5 s at 15 fps, 112x112 by default) of :data:`MOTIONS`; ``python -m edge.teach.measure still --out
FILE.avi --annotations FILE.csv --seconds 60`` a still scene (and its one ``background`` row, so
``eval-events`` counts every event on it as false).

The motions come from the synthetic generator's version 5 (photographs as textures, an arm, distractors)
when it knows them; else they are drawn here with generator 4's parts (procedural textures), and the
summary says which (``generator``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

MOTIONS = ("swipe_up_left", "swipe_up_right", "swipe_down_left", "swipe_down_right", "shake", "wave")
_DIAG = {"swipe_up_left": (-1, -1), "swipe_up_right": (1, -1), "swipe_down_left": (-1, 1), "swipe_down_right": (1, 1)}


def _v5_knows(label: str) -> bool:
    try:
        from edge.data.synth import ALL_CLASSES, GENERATORS  # type: ignore[attr-defined]
    except ImportError:
        return False
    return 5 in GENERATORS and label in ALL_CLASSES


def _own_trajectory(label: str, rng: np.random.Generator, w: int, h: int, n: int) -> tuple[np.ndarray, ...]:
    """Centre x, y and angle per frame for the motions generator 4 does not have."""
    from edge.data.synth import _progress
    p = _progress(rng, n)
    angle = rng.uniform(-180, 180) + np.zeros(n)
    if label in _DIAG:
        sx, sy = _DIAG[label]
        travel = rng.uniform(0.35, 0.55) * min(w, h)
        tilt = np.deg2rad(rng.uniform(35, 55))
        dx, dy = sx * travel * np.cos(tilt), sy * travel * np.sin(tilt)
        x0 = rng.uniform(0.15 * w, 0.85 * w - abs(dx)) + (abs(dx) if sx < 0 else 0)
        y0 = rng.uniform(0.15 * h, 0.85 * h - abs(dy)) + (abs(dy) if sy < 0 else 0)
        return x0 + dx * p, y0 + dy * p, angle + rng.uniform(-10, 10) * p
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    cycles = rng.uniform(1.25, 2.25)
    phase = 2 * np.pi * cycles * p
    amp = rng.uniform(0.15, 0.25) * w
    if label == "shake":
        return cx + amp * np.sin(phase), cy + rng.uniform(-2, 2) * p, angle
    if label == "wave":  # a swing about a point below the object: the path is an arc, the object turns with it
        swing = np.deg2rad(rng.uniform(20, 35)) * np.sin(phase)
        arm = rng.uniform(0.35, 0.5) * h
        return cx + arm * np.sin(swing), cy + arm * (1 - np.cos(swing)), angle - np.rad2deg(swing)
    raise ValueError(label)


def render_motion(label: str, rng: np.random.Generator, size: tuple[int, int], frames: int,
                  generator: int | None = None) -> tuple[np.ndarray, int]:
    """(frames x H x W x 3 BGR, generator used); ``generator`` None: 5 when it knows the label."""
    if generator == 5 or (generator is None and _v5_knows(label)):
        from edge.data.synth import render_clip
        return render_clip(label, rng, size, frames, generator=5), 5
    from edge.data.synth import _background, _blend, _object_matrix, _sprite
    w, h = size
    d = float(rng.uniform(0, 1))
    bg = _background(rng, w, h, d)
    cx, cy, angle = _own_trajectory(label, rng, w, h, frames)
    diam = rng.uniform(0.25, 0.4) * min(w, h)
    sprite, look = _sprite(rng, diam, bg.mean(axis=(0, 1)) / 255, d)
    shake = rng.normal(0, rng.uniform(0.3, 1.5) * d, (frames, 2))
    shake -= shake.mean(0)
    sigma = rng.uniform(0, 6) * d
    out = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        frame = cv2.warpAffine(bg, np.array([[1, 0, shake[i, 0]], [0, 1, shake[i, 1]]]), (w, h),
                               borderMode=cv2.BORDER_REFLECT_101)
        _blend(frame, sprite, _object_matrix(cx[i] + shake[i, 0], cy[i] + shake[i, 1], 1.0, angle[i], look["pivot"]))
        if sigma > 0.5:
            frame += rng.normal(0, sigma, frame.shape).astype(np.float32)
        out[i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out, 4


def _write(path: Path, clip: np.ndarray, fps: float) -> None:
    h, w = clip.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    try:
        for f in clip:
            writer.write(f)
    finally:
        writer.release()


def write_motions(out: Path, per_class: int, seed: int, labels: tuple[str, ...] = MOTIONS,
                  size: tuple[int, int] = (112, 112), frames: int = 22, fps: float = 15.0,
                  generator: int | None = None) -> dict:
    gens = set()
    for k, label in enumerate(labels):
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            clip, gen = render_motion(label, np.random.default_rng([seed, 100 + k, i]), size, frames, generator)
            gens.add(gen)
            _write(out / label / f"{label}_s{seed}_{i:03d}.avi", clip, fps)
    summary = {"root": str(out), "labels": list(labels), "per_class": per_class, "seed": seed, "frames": frames,
               "size": list(size), "fps": fps, "generator": sorted(gens)}
    (out / "motions.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def write_still(out: Path, annotations: Path, seconds: float, seed: int, size: tuple[int, int] = (640, 480),
                fps: float = 15.0) -> dict:
    """A still scene: a textured background and an object that stays put, sensor noise and a slow flicker."""
    from edge.data.synth import render_clip
    frames = render_clip("no_motion", np.random.default_rng(seed), size, 2, difficulty=0.0)
    rng = np.random.default_rng(seed + 1)
    n = int(round(seconds * fps))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    base = frames[0].astype(np.float32)
    try:
        for i in range(n):
            gain = 1 + 0.03 * np.sin(2 * np.pi * i / (fps * 7))
            img = base * gain + rng.normal(0, 2.0, base.shape)
            writer.write(np.clip(img, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    annotations.write_text(f"start,end,label\n0,{seconds:g},background\n", encoding="utf-8")
    return {"video": str(out), "annotations": str(annotations), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.teach.measure")
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("motions")
    m.add_argument("--out", required=True)
    m.add_argument("--per-class", type=int, default=20)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--frames", type=int, default=22)
    m.add_argument("--generator", type=int, choices=[4, 5], help="default: 5 when it knows the motions")
    s = sub.add_parser("still")
    s.add_argument("--out", required=True)
    s.add_argument("--annotations", required=True)
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--seed", type=int, default=5)
    a = p.parse_args(argv)
    if a.what == "motions":
        print(json.dumps(write_motions(Path(a.out), a.per_class, a.seed, frames=a.frames,
                                       generator=a.generator)))
    else:
        print(json.dumps(write_still(Path(a.out), Path(a.annotations), a.seconds, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
