"""What generator 5 adds around the object: the arm that holds it and the distractors that move elsewhere.

The arm is a thick limb from a point just outside one edge of the frame to a grip point fixed on the
object (so it turns, tilts and scales with it), with a hand-like blob where it holds the object, drawn
in front of the object or behind it. Its shoulder end slides along the edge by a fraction of what the
grip moves, so the arm's angle changes as the object moves (as a real arm does: the case where a
generator-4 model saw a turning limb and called a slow swipe a rotation).

Distractors are smaller things moving on their own paths (straight, bouncing off the frame's borders,
with a sway), in every class, including ``no_motion``: the label is what the main object does.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import DataError

_SUB = 16  # sub-pixel factor of cv2 drawing calls with shift=4
# Skin tones and sleeve colours (BGR, 0..255); each arm varies its pick.
_SKIN = ((110, 140, 205), (90, 120, 180), (70, 95, 150), (55, 70, 110), (130, 165, 225), (40, 50, 75))


@dataclass
class Arm:
    """An arm: where it leaves the frame, how it follows the grip, how it looks."""

    edge: str            # bottom, left, right or top: where the shoulder end is
    anchor0: np.ndarray  # shoulder end at frame 0 (pixels, just outside the frame)
    grip: np.ndarray     # the grip point in sprite coordinates (moves with the object)
    grip0: np.ndarray    # the grip point on screen at frame 0
    follow: float        # how much of the grip's motion along the edge the shoulder end follows
    width: float         # limb thickness in pixels at the object's first scale
    colour: np.ndarray   # BGR 0..255: the hand and forearm (skin or a glove)
    sleeve: np.ndarray | None  # BGR 0..255 of a sleeve over the rest of the arm, or bare
    sleeve_at: float     # where the sleeve starts, as a fraction of the way from the grip to the shoulder end
    hand: bool           # draw a hand-like blob at the grip
    in_front: bool       # in front of the object (else behind it)

    def anchor(self, grip_xy: np.ndarray) -> np.ndarray:
        a = self.anchor0.copy()
        k = 0 if self.edge in ("bottom", "top") else 1
        a[k] += self.follow * (grip_xy[k] - self.grip0[k])
        return a


def make_arm(rng: np.random.Generator, w: int, h: int, centre: np.ndarray, angle: float, pivot: tuple[float, float],
             size: float, sprite_diam: float, edge: str | None = None) -> Arm:
    """An arm for an object at ``centre`` (frame 0) of diameter ``size``, seen at ``angle`` (cv2 degrees);
    ``pivot`` is the object's centre in sprite coordinates and ``sprite_diam`` the sprite's drawn diameter."""
    if edge is None:
        edge = str(rng.choice(["bottom", "left", "right", "top"], p=[0.55, 0.2, 0.2, 0.05]))
    width = size * rng.uniform(0.25, 0.45)
    along = {"bottom": 0, "top": 0, "left": 1, "right": 1}[edge]
    anchor0 = centre.astype(np.float64).copy()
    anchor0[along] += rng.uniform(-0.3, 0.3) * (w, h)[along]
    out = width / 2 + 2
    anchor0[1 - along] = {"bottom": h + out, "top": -out, "left": -out, "right": w + out}[edge]
    # The grip: on the object's outline, on the side facing the shoulder, in sprite coordinates
    # (undo the object's on-screen turn; a sprite pixel is sprite_diam/size screen pixels).
    d = anchor0 - centre
    d /= np.linalg.norm(d) + 1e-9
    a = np.deg2rad(angle)
    # screen = R(angle) sprite with R = [[cos, sin], [-sin, cos]] (cv2's counter-clockwise-on-screen turn)
    d_sprite = np.array([d[0] * np.cos(a) - d[1] * np.sin(a), d[0] * np.sin(a) + d[1] * np.cos(a)])
    reach = rng.uniform(0.25, 0.45) * sprite_diam
    grip = np.array(pivot, np.float64) + d_sprite * reach
    grip0 = centre + d * reach * size / sprite_diam
    if rng.random() < 0.85:
        base = np.array(_SKIN[int(rng.integers(len(_SKIN)))], np.float64)
        colour = np.clip(base * rng.uniform(0.85, 1.15, 3), 0, 255)
    else:  # a glove
        colour = rng.uniform(20, 235, 3)
    sleeve = rng.uniform(15, 240, 3) if rng.random() < 0.6 else None
    return Arm(edge, anchor0, grip, grip0, float(rng.uniform(0.2, 0.8)), float(width), colour, sleeve,
               float(rng.uniform(0.25, 0.7)), bool(rng.random() < 0.7), bool(rng.random() < 0.6))


def draw_arm(frame: np.ndarray, arm: Arm, grip_xy: np.ndarray, scale: float) -> None:
    """Draw ``arm`` into the float32 BGR ``frame`` in place, from its shoulder end to ``grip_xy``, its
    thickness scaled by ``scale`` (the object's size now over its size at frame 0)."""
    h, w = frame.shape[:2]
    a = arm.anchor(grip_xy)
    thick = max(2.0, arm.width * scale)
    pad = 1.2 * thick + 3
    x0, y0 = np.floor(np.minimum(a, grip_xy) - pad).astype(int)
    x1, y1 = np.ceil(np.maximum(a, grip_xy) + pad).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    o = np.array([x0, y0], np.float64)
    p0 = tuple(np.round((a - o) * _SUB).astype(int))
    p1 = tuple(np.round((grip_xy - o) * _SUB).astype(int))
    cv2.line(mask, p0, p1, 255, max(1, round(thick)), cv2.LINE_AA, 4)
    if arm.hand:
        r = round(0.55 * thick * _SUB)
        cv2.circle(mask, p1, r, 255, -1, cv2.LINE_AA, 4)
    over(frame[y0:y1, x0:x1], mask, arm.colour)
    if arm.sleeve is not None:  # a sleeve from the shoulder end down to the forearm, a little wider
        mask[:] = 0
        q = tuple(np.round(np.array(p1) + arm.sleeve_at * (np.array(p0) - p1)).astype(int))
        cv2.line(mask, p0, q, 255, max(1, round(thick * 1.2)), cv2.LINE_AA, 4)
        over(frame[y0:y1, x0:x1], mask, arm.sleeve)
    # a highlight along the limb, so it reads as round rather than flat
    mask[:] = 0
    d = np.array(p1, np.float64) - p0
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * thick * 0.2 * _SUB
    cv2.line(mask, tuple((np.array(p0) + n).astype(int)), tuple((np.array(p1) + n).astype(int)), 64,
             max(1, round(thick * 0.25)), cv2.LINE_AA, 4)
    over(frame[y0:y1, x0:x1], mask, (255.0, 255.0, 255.0))


def over(roi: np.ndarray, mask: np.ndarray, colour) -> None:
    """Paint ``colour`` (BGR) over the float32 ``roi`` in place with the uint8 coverage ``mask`` (255: opaque).
    Channel-wise OpenCV calls on same-shaped arrays: numpy's broadcasting over a last axis of 3 is slow."""
    a = mask.astype(np.float32) * np.float32(1 / 255)
    a3 = cv2.merge((a, a, a))
    roi *= 1 - a3
    roi += cv2.multiply(a3, (float(colour[0]), float(colour[1]), float(colour[2]), 0.0))


def fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect ``x`` into [lo, hi] (a point bouncing off the borders)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def check_distractors(distractors: float | None, generator: int = 5) -> None:
    """``distractors`` is ``None`` (each scene its own chance) or a chance from 0 to 1, of generator 5's scenes.

    Raises:
        DataError: another value, or another generator (generator 4 has no distractors).
    """
    if distractors is not None and generator != 5:
        raise DataError(f"distractors {distractors}: generator {generator} has none (generator 5 has them)")
    if distractors is not None and not 0.0 <= distractors <= 1.0:
        raise DataError(f"distractors {distractors}: expected a chance from 0 to 1")


def distractor_path(rng: np.random.Generator, w: int, h: int, n: int) -> dict:
    """A distractor's per-frame centre and angle: a straight drift (2 to 40 % of the frame width per second
    at 15 fps) bouncing off the borders, with a sway, over ``n`` frames."""
    speed = np.exp(rng.uniform(np.log(0.02), np.log(0.4))) * w / 15.0
    a = rng.uniform(0, 2 * np.pi)
    t = np.arange(n, dtype=np.float64)
    sway = rng.uniform(0, 0.04) * w * np.sin(2 * np.pi * t / rng.uniform(10, 60) + rng.uniform(0, 2 * np.pi))
    x = fold(rng.uniform(0, w) + speed * np.cos(a) * t + sway * np.sin(a), -0.05 * w, 1.05 * w)
    y = fold(rng.uniform(0, h) + speed * np.sin(a) * t - sway * np.cos(a), -0.05 * h, 1.05 * h)
    angle = rng.uniform(-180, 180) + rng.uniform(-3, 3) * t
    return {"cx": x, "cy": y, "angle": angle}
