"""Generator 5's motions: per-frame object state for every class in :data:`ALL_CLASSES`.

A state is the object's centre ``cx, cy`` (pixels), diameter ``size`` (pixels), in-plane ``angle``
(degrees, cv2 convention: positive turns counter-clockwise as displayed) and its turn in depth, ``yaw``
(about the vertical axis; positive faces left: the right edge nearer) and ``pitch`` (about the
horizontal axis; positive faces up: the bottom edge nearer), in degrees.

Compared with generator 4, motions are slower and smaller as well as fast (a swipe travels 16 to 75 %
of the frame over a clip: at 24 frames and 15 fps, 10 to 47 % per second), their speed varies within
the motion (easing, speeding up, slowing down) without ever stopping, and every class carries small
turns in depth as a nuisance. A trajectory either places the object where its motion fits (a clip) or
starts from a given state (one continuous scene, :mod:`edge.data.synth_recording`), where the motion is
cut to the room left and :class:`NoRoom` says when it does not fit at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import DataError

LO, HI = 0.1, 0.9            # the object's centre stays within these fractions of the frame
MIN_SIZE, MAX_SIZE = 0.12, 0.75  # diameter, fractions of the frame's short side
MAX_TILT = 70.0              # |yaw|, |pitch| (degrees): beyond it a planar object is almost edge-on
MIN_TRAVEL, MAX_TRAVEL = 0.16, 0.75  # swipe travel, fraction of the frame along the motion (short side: diagonals)
_SWIPE_DIRS = {"swipe_left": (-1, 0), "swipe_right": (1, 0), "swipe_up": (0, -1), "swipe_down": (0, 1),
               "swipe_up_left": (-1, -1), "swipe_up_right": (1, -1), "swipe_down_left": (-1, 1),
               "swipe_down_right": (1, 1)}


class NoRoom(DataError):
    """A motion does not fit from the given start (too near the edge, too big, too turned)."""


@dataclass(frozen=True)
class State:
    cx: float
    cy: float
    size: float
    angle: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0


def random_state(rng: np.random.Generator, w: int, h: int) -> State:
    short = min(w, h)
    return State(float(rng.uniform(0.15, 0.85) * w), float(rng.uniform(0.15, 0.85) * h),
                 float(short * np.exp(rng.uniform(np.log(0.2), np.log(0.5)))), float(rng.uniform(-180, 180)),
                 float(rng.uniform(-20, 20)), float(rng.uniform(-15, 15)))


def progress(rng: np.random.Generator, n: int) -> np.ndarray:
    """Monotone 0 -> 1 over ``n`` frames; the speed varies (even, easing, speeding up or slowing down,
    surging) but never falls below 0.35 of its mean, so the motion never stops."""
    t = (np.arange(n - 1) + 0.5) / max(n - 1, 1)
    kind = int(rng.integers(4))
    if kind == 0:
        v = np.ones(n - 1)
    elif kind == 1:
        v = 0.35 + np.sin(np.pi * t)
    elif kind == 2:
        v = 1 + rng.uniform(-0.65, 0.65) * (2 * t - 1)
    else:
        v = 1 + rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 2 * np.pi))
    v = v * np.exp(rng.normal(0, 0.1, n - 1))
    v = np.maximum(v, 0.35 * v.mean())
    return np.concatenate([[0.0], np.cumsum(v)]) / v.sum()


def _room(c: float, u: float, lo: float, hi: float) -> float:
    """How far from ``c`` a point may go along ``u`` (a component of a unit vector) within [lo, hi]."""
    if u > 0:
        return (hi - c) / u
    if u < 0:
        return (lo - c) / u
    return np.inf


def trajectory(label: str, rng: np.random.Generator, w: int, h: int, n: int,
               start: State | None = None) -> dict:
    """Per-frame state arrays (``cx, cy, size, angle, yaw, pitch``, length ``n``) and ``present``.

    Without ``start`` the object is placed where its motion fits (a clip); with it, frame 0 is exactly
    ``start`` and the motion's extent is cut to the room left.
    Raises:
        NoRoom: with ``start``, the motion cannot reach its smallest extent.
        DataError: an unknown label.
    """
    placed = start is None
    s = random_state(rng, w, h) if placed else start
    p = progress(rng, n)
    short = min(w, h)
    lo, hi = np.array([LO * w, LO * h]), np.array([HI * w, HI * h])
    c0 = np.array([s.cx, s.cy], np.float64)
    size0, ang0 = float(s.size), float(s.angle)
    yaw0, pitch0 = float(s.yaw), float(s.pitch)
    z = np.zeros(n)
    present = True
    # Small drifts every moving class carries (tilts in depth, turns, size); overwritten where they are the motion.
    d_angle, d_size = rng.uniform(-8, 8), rng.uniform(-0.06, 0.06)
    d_yaw, d_pitch = rng.uniform(-12, 12), rng.uniform(-10, 10)
    drift = _unit2(rng) * rng.uniform(0, 0.03) * short
    cx, cy = c0[0] + drift[0] * p, c0[1] + drift[1] * p
    size = size0 * (1 + d_size * p)
    angle = ang0 + d_angle * p
    if label in _SWIPE_DIRS:
        dx, dy = _SWIPE_DIRS[label]
        diag = bool(dx and dy)
        if diag:
            a = np.deg2rad(rng.uniform(33, 57))
            u = np.array([dx * np.cos(a), dy * np.sin(a)])
            ext = short
        else:
            u = np.array([dx, dy], np.float64)
            ext = w if dx else h
        travel = ext * np.exp(rng.uniform(np.log(MIN_TRAVEL), np.log(MAX_TRAVEL)))
        if placed:
            travel = min(travel, 0.8 * min((hi - lo)[k] / abs(u[k]) for k in range(2) if u[k]))
            for k in range(2):
                if u[k]:
                    a0, a1 = lo[k] - min(0.0, u[k] * travel), hi[k] - max(0.0, u[k] * travel)
                    c0[k] = rng.uniform(a0, a1)
                else:
                    c0[k] = rng.uniform(0.2, 0.8) * (w, h)[k]
        else:
            room = min(_room(c0[0], u[0], lo[0], hi[0]), _room(c0[1], u[1], lo[1], hi[1]))
            if room < MIN_TRAVEL * ext:
                raise NoRoom(f"{label}: {room:.0f} px of room, needs {MIN_TRAVEL * ext:.0f}")
            travel = min(travel, room)
        perp = np.array([-u[1], u[0]])
        off = travel * (rng.uniform(-0.12, 0.12) * p + rng.uniform(-0.08, 0.08) * np.sin(np.pi * p))
        cx, cy = c0[0] + u[0] * travel * p + perp[0] * off, c0[1] + u[1] * travel * p + perp[1] * off
        angle = ang0 + rng.uniform(-15, 15) * p
        size = size0 * (1 + rng.uniform(-0.1, 0.1) * p)
    elif label == "no_motion":
        cx, cy, size, angle = c0[0] + z, c0[1] + z, size0 + z, ang0 + z
        d_yaw = d_pitch = 0.0
        yaw, pitch = yaw0 + z, pitch0 + z
        if placed:
            present = rng.random() > 0.1
        if rng.random() < 0.6:  # wobble in place (a hand holding still): whole periods, no net change
            ph = 2 * np.pi * rng.integers(1, 4) * np.arange(n) / max(n - 1, 1)
            wob = [np.sin(ph + phi) - np.sin(phi) for phi in rng.uniform(0, 2 * np.pi, 6)]  # 0 at both ends
            cx = cx + rng.uniform(0.5, 3) * wob[0]
            cy = cy + rng.uniform(0.5, 3) * wob[1]
            angle = angle + rng.uniform(0, 4) * wob[2]
            size = size * (1 + rng.uniform(0, 0.04) * wob[3])
            yaw, pitch = yaw + rng.uniform(0, 5) * wob[4], pitch + rng.uniform(0, 4) * wob[5]
        return _finish(present, cx, cy, size, angle, yaw, pitch, w, h)
    elif label in ("zoom_in", "zoom_out", "approach_and_leave"):
        k = np.exp(rng.uniform(np.log(1.35), np.log(3.0))) if label != "approach_and_leave" \
            else rng.uniform(1.4, 2.5)
        smin, smax = MIN_SIZE * short, MAX_SIZE * short
        if placed:
            size0 = float(np.clip(size0, smin * (k if label == "zoom_out" else 1),
                                  smax / (1 if label == "zoom_out" else k)))
            c0 = rng.uniform(0.25, 0.75, 2) * (w, h)
            cx, cy = c0[0] + drift[0] * p, c0[1] + drift[1] * p
        else:
            k_room = size0 / smin if label == "zoom_out" else smax / size0
            if k_room < (1.4 if label == "approach_and_leave" else 1.35):
                raise NoRoom(f"{label}: size {size0:.0f} px leaves a factor {k_room:.2f}")
            k = min(k, k_room)
        e = {"zoom_in": p, "zoom_out": -p, "approach_and_leave": np.sin(np.pi * p)}[label]
        size = size0 * k ** e
        angle = ang0 + rng.uniform(-10, 10) * p
    elif label in ("rotate_cw", "rotate_ccw"):
        if placed:
            c0 = rng.uniform(0.25, 0.75, 2) * (w, h)
            cx, cy = c0[0] + drift[0] * p, c0[1] + drift[1] * p
        angle = ang0 + (-1 if label == "rotate_cw" else 1) * rng.uniform(45, 170) * p
    elif label in ("shake", "wave"):
        q = progress(rng, n) * 0.4 + np.linspace(0, 1, n) * 0.6  # near-even pace: an oscillation keeps its rhythm
        cycles = rng.uniform(1.25, 2.25)
        osc = np.sin(2 * np.pi * cycles * q) * rng.choice([-1.0, 1.0])
        amp = rng.uniform(0.06, 0.15) * w if label == "shake" else np.sin(np.deg2rad(rng.uniform(15, 35)))
        length = rng.uniform(0.8, 1.5) * size0  # wave: the swing's radius (the object above its pivot)
        reach = amp if label == "shake" else length * amp
        side = min(c0[0] - lo[0], hi[0] - c0[0])
        least = 0.06 * w if label == "shake" else length * np.sin(np.deg2rad(15))
        if placed:
            c0[0] = rng.uniform(lo[0] + reach, hi[0] - reach) if hi[0] - lo[0] > 2 * reach else w / 2
        elif side < least:
            raise NoRoom(f"{label}: {side:.0f} px of room to the sides, needs {least:.0f}")
        else:
            reach = min(reach, side)
        if label == "shake":
            cx = c0[0] + reach * osc
            phi = rng.uniform(0, 2 * np.pi)
            cy = c0[1] + 0.08 * reach * (np.sin(2 * np.pi * cycles * q + phi) - np.sin(phi))
            angle = ang0 + rng.uniform(0, 4) * osc
        else:
            theta = np.arcsin(np.clip(reach / length, -1, 1)) * osc
            cx, cy = c0[0] + length * np.sin(theta), c0[1] + length * (1 - np.cos(theta))
            angle = ang0 - np.rad2deg(theta)  # swinging right leans the top right: clockwise on screen
    elif label in ("tilt_left", "tilt_right"):
        sign = 1.0 if label == "tilt_left" else -1.0
        turn = rng.uniform(35, 80)
        if placed:  # big enough to show its perspective
            size = size * max(1.0, 0.3 * short / size0)
            turn = min(turn, 2 * MAX_TILT)
            yaw0 = rng.uniform(-MAX_TILT, MAX_TILT - turn) if sign > 0 else rng.uniform(-MAX_TILT + turn, MAX_TILT)
            c0 = rng.uniform(0.25, 0.75, 2) * (w, h)
            cx, cy = c0[0] + drift[0] * p, c0[1] + drift[1] * p
        else:
            room = MAX_TILT - sign * yaw0
            if room < 35:
                raise NoRoom(f"{label}: yaw {yaw0:.0f} leaves {room:.0f} degrees")
            turn = min(turn, room)
        d_yaw = sign * turn
    else:
        raise DataError(f"generator 5 has no motion {label!r}")
    yaw = yaw0 + d_yaw * p
    pitch = pitch0 + d_pitch * p
    return _finish(present, cx, cy, size, angle, yaw, pitch, w, h)


def _unit2(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(a), np.sin(a)])


def _finish(present: bool, cx, cy, size, angle, yaw, pitch, w: int, h: int) -> dict:
    f = np.asarray
    return {"present": bool(present), "cx": np.clip(f(cx, np.float64), 0.05 * w, 0.95 * w),
            "cy": np.clip(f(cy, np.float64), 0.05 * h, 0.95 * h), "size": f(size, np.float64),
            "angle": f(angle, np.float64), "yaw": np.clip(f(yaw, np.float64), -MAX_TILT, MAX_TILT),
            "pitch": np.clip(f(pitch, np.float64), -MAX_TILT, MAX_TILT)}


def last_state(traj: dict) -> State:
    """The state a trajectory ends in: where the next motion of a continuous scene starts."""
    return State(*(float(traj[k][-1]) for k in ("cx", "cy", "size", "angle", "yaw", "pitch")))
