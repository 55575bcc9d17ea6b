"""Helpers for measuring a taught model's false events (docs/teach.md).

``python -m edge.teach.measure still --out F.avi --annotations F.csv --seconds 60`` writes a still scene
(a photograph-textured background and an object that stays put, sensor noise, a slow light flicker);
``python -m edge.teach.measure background VIDEO --out F.csv`` writes one ``background`` row over the whole
of VIDEO. With either CSV ``edge-tsm eval-events`` scores a taught model (``background`` is not a target,
so every event is a false one) on a recording of motions it was not taught.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np


def write_still(out: Path, annotations: Path, seconds: float, seed: int, size: tuple[int, int] = (640, 480),
                fps: float = 15.0) -> dict:
    """A still scene of ``seconds`` and its one ``background`` row."""
    from edge.data.synth import render_clip
    first = render_clip("no_motion", np.random.default_rng(seed), size, 2, difficulty=0.2)[0].astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    n = int(round(seconds * fps))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError(f"{out}: cannot be written (OpenCV VideoWriter, MJPG)")
    try:
        for i in range(n):
            gain = 1 + 0.03 * np.sin(2 * np.pi * i / (fps * 7))
            writer.write(np.clip(first * gain + rng.normal(0, 2.0, first.shape), 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return {"video": str(out), **write_background(out, annotations)}


def write_background(video: Path, annotations: Path) -> dict:
    """One ``start,end,label`` row: the whole of ``video`` is background."""
    cap = cv2.VideoCapture(str(video))
    n, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    if not n or not fps:
        raise OSError(f"{video}: cannot read its length")
    seconds = round(n / fps, 3)
    annotations.write_text(f"start,end,label\n0,{seconds:g},background\n", encoding="utf-8")
    return {"annotations": str(annotations), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.teach.measure")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("still", help="a still scene and its background row")
    s.add_argument("--out", required=True)
    s.add_argument("--annotations", required=True)
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--seed", type=int, default=5)
    b = sub.add_parser("background", help="one background row over a whole video")
    b.add_argument("video")
    b.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.what == "still":
        res = write_still(Path(a.out), Path(a.annotations), a.seconds, a.seed)
    else:
        res = write_background(Path(a.video), Path(a.out))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
