"""Generator 5: one scene (background, object, arm, distractors, camera and light) rendered frame by frame.

A :class:`Scene` is built from the object's per-frame state (:mod:`edge.data.synth_motion`) and draws
any frame of it, so a clip (:func:`render_clip_v5`) and a long continuous recording
(:mod:`edge.data.synth_recording`) are the same code. What generator 5 adds to generator 4's look:

- photographs (:mod:`edge.data.textures`) as backgrounds and object textures, beside the procedural ones;
- a few static objects on the background, and smaller distractors moving elsewhere;
- an arm holding the object from a frame edge (:mod:`edge.data.occluders`), in front of or behind it;
- the object as a plane with perspective: turns in depth (yaw, pitch) foreshorten it, the near edge larger;
- motion blur along the object's motion; exposure and white-balance drift besides the flicker.
The nuisances are drawn from the same distributions for every class.
"""
from __future__ import annotations

import cv2
import numpy as np

from edge.data import textures
from edge.data.occluders import Arm, distractor_path, draw_arm, make_arm
from edge.data.synth import (
    _GAUSS_LUT,
    _SUB,
    OBJ_TEXTURES,
    SHAPES,
    _background,
    _blend,
    _draw_shape,
    _grid,
    _ipt,
    _object_colour,
    _object_matrix,
    _pattern,
    _two_tone,
    _unit,
)
from edge.data.synth_motion import trajectory


def _smooth(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """A slow random curve over ``n`` frames with values within about +-``amp`` (periods of 2 to 16 s at 15 fps)."""
    t = np.arange(n, dtype=np.float64)
    v = sum(np.sin(2 * np.pi * t / rng.uniform(30, 240) + rng.uniform(0, 2 * np.pi)) for _ in range(2)) / 2
    return amp * v


def make_sprite(rng: np.random.Generator, diam: float, bg_mean: np.ndarray, difficulty: float,
                photos: tuple, shape: str | None = None) -> tuple[np.ndarray, dict]:
    """An object drawn once at ``diam`` pixels: ``s x s x 4`` premultiplied BGR*alpha and alpha, float32,
    textured by a photograph (when there are any) or a procedural pattern; plus its look and pivot."""
    r = diam / 2
    s = int(np.ceil(diam)) + 4
    c = (s - 1) / 2
    mask = np.zeros((s, s), np.uint8)
    if shape is None:
        shape = "rectangle" if rng.random() < 0.3 else str(rng.choice(SHAPES))
    _draw_shape(mask, shape, rng, c, r)
    if photos and rng.random() < 0.55:
        name, img = photos[int(rng.integers(len(photos)))]
        tex = textures.crop(rng, img, s, s, zoom=(0.6, 2.5)) / 255
        kind = f"photo:{name}"
        if rng.random() < 0.5:  # pull its brightness away from the background's, as most objects stand out
            shift = (0.5 - bg_mean.mean()) * rng.uniform(0.3, 0.9)
            tex = np.clip(tex + np.float32(shift), 0, 1)
    else:
        c1 = _object_colour(rng, bg_mean, difficulty)
        c2 = np.clip(c1 + _unit(rng) * rng.uniform(0.25, 0.6), 0, 1)
        kind = str(rng.choice(OBJ_TEXTURES))
        tex = _two_tone(_pattern(rng, kind, s, s), c1, c2)
    # An off-centre mark (every class, so it does not give the class away), half the time; always on a circle,
    # whose outline does not show a turn: a disc of a dark, nearly uniform photograph (the deep field) turned
    # with no visible change, and a recording of one such object had rotations no model could see.
    marked = rng.random() < 0.5
    if marked or shape == "circle":
        a = rng.uniform(0, 2 * np.pi)
        mark = (c + 0.5 * r * np.cos(a), c + 0.5 * r * np.sin(a))
        m = tex[int(np.clip(mark[1], 0, s - 1)), int(np.clip(mark[0], 0, s - 1))]
        colour = np.where(m > 0.5, m - 0.5, m + 0.5)
        cv2.circle(tex, _ipt(mark), round(rng.uniform(0.15, 0.3) * r * _SUB), colour.tolist(), -1, cv2.LINE_AA, 4)
    if rng.random() < 0.3:  # shading from a light on one side
        xx, yy = _grid(s, s)
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((xx - c) * np.cos(a) + (yy - c) * np.sin(a)) / (r + 1e-6)
        tex *= np.clip(1 - rng.uniform(0.1, 0.35) * (ramp + 1), 0.2, 1)[..., None]
    alpha = mask.astype(np.float32) / 255
    mom = cv2.moments(alpha)
    pivot = (mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]) if mom["m00"] > 0 else (c, c)
    sprite = np.concatenate([tex * 255 * alpha[..., None], alpha[..., None]], axis=2)
    if rng.random() < 0.4:  # defocus
        sprite = cv2.GaussianBlur(sprite, (0, 0), rng.uniform(0.4, 1.5))
    return sprite.astype(np.float32), {"shape": shape, "texture": kind, "pivot": pivot}


def _background_v5(rng: np.random.Generator, w: int, h: int, d: float, photos: tuple) -> tuple[np.ndarray, str]:
    if photos and rng.random() < 0.6:
        name, img = photos[int(rng.integers(len(photos)))]
        bg = textures.crop(rng, img, w, h) / 255
        if rng.random() < 0.3:
            bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(0.5, 2.0))
        bg = rng.uniform(0.15, 0.8) + (bg - bg.mean()) * rng.uniform(0.3, 0.4 + 0.8 * d)
        return (np.clip(bg, 0, 1) * 255).astype(np.float32), f"photo:{name}"
    return _background(rng, w, h, d), "procedural"


def plane_homographies(traj: dict, pivot: tuple[float, float], s: int, sprite_diam: float, focal: float,
                       shake: np.ndarray | None = None) -> np.ndarray:
    """``n x 3 x 3`` maps of sprite pixels to the screen, one per frame of ``traj``: the sprite's ``pivot``
    lands at ``(cx, cy)`` (plus ``shake``), scaled to ``size``, turned in-plane by ``angle`` (cv2
    convention), then turned in depth by ``yaw`` (about the vertical axis, positive: faces left) and
    ``pitch`` (horizontal axis, positive: faces up) and projected from a viewpoint ``focal`` pixels away
    (the near edge larger)."""
    src = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float64)
    q = (src - pivot)[None] * (traj["size"] / sprite_diam)[:, None, None]  # n x 4 x 2
    a, ty, tp = (np.deg2rad(traj[k])[:, None] for k in ("angle", "yaw", "pitch"))
    x = q[..., 0] * np.cos(a) + q[..., 1] * np.sin(a)
    y = -q[..., 0] * np.sin(a) + q[..., 1] * np.cos(a)
    x, z = x * np.cos(ty), -x * np.sin(ty)  # yaw > 0: the right edge (x > 0) nearer (z < 0)
    y, z = y * np.cos(tp) + z * np.sin(tp), -y * np.sin(tp) + z * np.cos(tp)  # pitch > 0: the bottom nearer
    k = focal / (focal + z)
    cx, cy = traj["cx"][:, None], traj["cy"][:, None]
    if shake is not None:
        cx, cy = cx + shake[:, :1], cy + shake[:, 1:]
    dst = np.stack([cx + x * k, cy + y * k], 2).astype(np.float32)
    src32 = src.astype(np.float32)
    return np.stack([cv2.getPerspectiveTransform(src32, d) for d in dst])


def blend_h(frame: np.ndarray, sprite: np.ndarray, m: np.ndarray, blur: np.ndarray | None = None) -> None:
    """Warp the premultiplied ``sprite`` by the homography ``m`` into ``frame`` (in place, only the box it
    lands in), smeared along ``blur`` (a pixel vector: the motion during the exposure) when given."""
    h, w = frame.shape[:2]
    s = sprite.shape[0]
    c = m @ np.array([[0, s, 0, s], [0, 0, s, s], [1, 1, 1, 1]], np.float64)
    cx, cy = c[0] / c[2], c[1] / c[2]
    pad = 2 + (int(abs(blur[0]) + abs(blur[1])) + 1 if blur is not None else 0)
    x0, y0 = max(int(cx.min()) - pad, 0), max(int(cy.min()) - pad, 0)
    x1, y1 = min(int(cx.max()) + pad + 1, w), min(int(cy.max()) + pad + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    t = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    patch = cv2.warpPerspective(sprite, t @ m, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if blur is not None:
        patch = cv2.filter2D(patch, -1, _line_kernel(blur))
    roi = frame[y0:y1, x0:x1]
    inv = 1 - patch[..., 3]
    roi *= cv2.merge((inv, inv, inv))  # same-shaped operands: numpy's broadcasting over 3 channels is slow
    roi += cv2.cvtColor(patch, cv2.COLOR_BGRA2BGR)


def _line_kernel(v: np.ndarray) -> np.ndarray:
    k = 2 * int(np.ceil(np.abs(v).max() / 2)) + 1
    ker = np.zeros((k, k), np.uint8)
    c = (k - 1) / 2
    cv2.line(ker, _ipt((c - v[0] / 2, c - v[1] / 2)), _ipt((c + v[0] / 2, c + v[1] / 2)), 255, 1, cv2.LINE_AA, 4)
    ker = ker.astype(np.float32)
    return ker / ker.sum()


class Scene:
    """Everything of one scene but the object's motion, which ``traj`` gives frame by frame.

    Draws from ``rng`` in a fixed order when built; :meth:`frame` draws only the sensor noise.
    """

    def __init__(self, rng: np.random.Generator, w: int, h: int, traj: dict, difficulty: float,
                 photos: tuple | None = None, arm: bool | None = None, distractors: float | None = None) -> None:
        photos = textures.photos() if photos is None else photos
        self.rng, self.w, self.h, self.traj = rng, w, h, traj
        n = self.n = len(traj["cx"])
        d = self.d = difficulty
        self.bg, bg_source = _background_v5(rng, w, h, d, photos)
        short = min(w, h)
        self.sprite_diam = float(np.max(traj["size"]))
        self.sprite, look = make_sprite(rng, self.sprite_diam, self.bg.mean(axis=(0, 1)) / 255, d, photos)
        self.pivot = look.pop("pivot")
        self.focal = float(rng.uniform(1.5, 4.0) * traj["size"][0])
        # Static objects on the background; moving distractors (smaller than the object, mostly).
        clutter = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
        for _ in range(clutter):
            diam = rng.uniform(0.1, 0.3) * short
            sp, lk = make_sprite(rng, diam, self.bg.mean(axis=(0, 1)) / 255, d, photos)
            _blend(self.bg, sp, _object_matrix(rng.uniform(0, w), rng.uniform(0, h), 1.0, rng.uniform(-180, 180),
                                               lk["pivot"]))
        self.distractors = []
        if rng.random() < (0.25 + 0.5 * d if distractors is None else distractors):   # the same draw either way
            for _ in range(int(rng.integers(1, 4))):
                diam = min(rng.uniform(0.05, 0.12) * short, 0.5 * float(np.min(traj["size"])))  # clearly smaller
                sp, lk = make_sprite(rng, max(diam, 4.0), self.bg.mean(axis=(0, 1)) / 255, d, photos)
                self.distractors.append((sp, lk["pivot"], distractor_path(rng, w, h, n)))
        # Camera: zero-mean shake (sometimes smoothed; no drift). Light: a static ramp, flicker, exposure and
        # white-balance drift, a colour cast. Sensor: noise, JPEG. Motion blur: exposure over the frame time.
        shake = rng.normal(0, 0 if rng.random() < 0.15 else rng.uniform(0.3, 2.0) * d, (n, 2))
        if rng.random() < 0.5:
            shake = (np.vstack([shake[:1], shake[:-1]]) + 2 * shake + np.vstack([shake[1:], shake[-1:]])) / 4
        self.shake = shake - shake.mean(axis=0)
        s = self.sprite.shape[0]
        self.H = plane_homographies(traj, self.pivot, s, self.sprite_diam, self.focal, self.shake)
        self.arm: Arm | None = None
        self.grips = None
        if (rng.random() < 0.55) if arm is None else arm:
            st = {k: traj[k][:1] for k in ("cx", "cy", "size", "angle", "yaw", "pitch")}
            self.arm = make_arm(rng, w, h, np.array([st["cx"][0], st["cy"][0]]), float(st["angle"][0]), self.pivot,
                                float(st["size"][0]), self.sprite_diam,
                                edge="bottom" if traj.get("label") == "wave" else None)
            h0 = plane_homographies(st, self.pivot, s, self.sprite_diam, self.focal)
            g = np.append(self.arm.grip, 1.0)
            self.arm.grip0 = (h0[0] @ g)[:2] / (h0[0] @ g)[2]
            gs = self.H @ g
            self.grips = gs[:, :2] / gs[:, 2:]
        t = np.arange(n)
        flicker = (1 + rng.uniform(0, 0.1) * np.sin(2 * np.pi * t / rng.uniform(8, 48) + rng.uniform(0, 2 * np.pi))
                   + rng.normal(0, rng.uniform(0, 0.02), n))
        exposure = np.exp(_smooth(rng, n, rng.uniform(0, 0.3)))
        cast = np.exp(rng.uniform(-0.12, 0.12, 3))
        wb = np.exp(np.stack([_smooth(rng, n, rng.uniform(0, 0.08)) for _ in range(3)], 1))
        self.gain = (flicker * exposure)[:, None] * cast * wb  # n x 3 (B, G, R)
        xx, yy = _grid(h, w)
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)) / (max(w, h) / 2)
        light = 1 + (rng.uniform(-0.3, 0.3) if rng.random() < 0.5 else 0.0) * ramp
        self.light = np.repeat(light[..., None], 3, axis=2).astype(np.float32)
        blur = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.3, 1.0))
        v = np.gradient(np.stack([traj["cx"], traj["cy"]], 1), axis=0) if n > 1 else np.zeros((n, 2))
        self.blur = v * blur  # per frame: the centre's motion during the exposure (pixels)
        self.blur_exposure = blur
        self.scale = traj["size"] / traj["size"][0]
        self.noise_sigma = float(rng.uniform(0, 8) * d)
        self.jpeg = bool(rng.random() < 0.5 * d)
        self.look = {"background": bg_source, "clutter": clutter, "distractors": len(self.distractors),
                     "arm": None if self.arm is None else ("front" if self.arm.in_front else "behind"), **look}

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i``: ``H x W x 3`` uint8 BGR."""
        w, h = self.w, self.h
        sx, sy = self.shake[i]
        frame = cv2.warpAffine(self.bg, np.array([[1, 0, sx], [0, 1, sy]]), (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        for sp, pivot, path in self.distractors:
            m = _object_matrix(path["cx"][i] + sx, path["cy"][i] + sy, 1.0, path["angle"][i], pivot)
            blend_h(frame, sp, np.vstack([m, (0, 0, 1)]))
        if self.traj["present"]:
            arm = self.arm
            if arm is not None and not arm.in_front:
                draw_arm(frame, arm, self.grips[i], float(self.scale[i]))
            b = self.blur[i]
            blend_h(frame, self.sprite, self.H[i], b if abs(b[0]) + abs(b[1]) >= 1.5 else None)
            if arm is not None and arm.in_front:
                draw_arm(frame, arm, self.grips[i], float(self.scale[i]))
        cv2.multiply(frame, self.light, dst=frame)
        g = self.gain[i]
        cv2.multiply(frame, (float(g[0]), float(g[1]), float(g[2]), 0.0), dst=frame)
        if self.noise_sigma > 0.5:
            raw = np.frombuffer(self.rng.bytes(h * w * 3), np.uint8).reshape(h, w, 3)
            cv2.scaleAdd(cv2.LUT(raw, _GAUSS_LUT), self.noise_sigma, frame, dst=frame)
        img = cv2.convertScaleAbs(np.maximum(frame, 0, out=frame))  # rounded, saturated at 255
        if self.jpeg:
            _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(self.rng.integers(30, 91))])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return img


def render_clip_v5(label: str, rng: np.random.Generator, size: tuple[int, int], frames: int,
                   difficulty: float | None = None, return_params: bool = False,
                   photos: tuple | None = None, distractors: float | None = None) -> np.ndarray | tuple[np.ndarray, dict]:
    """One generator-5 clip (see :func:`edge.data.synth.render_clip`, which checks the arguments)."""
    w, h = size
    d = float(rng.uniform(0, 1)) if difficulty is None else float(np.clip(difficulty, 0, 1))
    traj = trajectory(label, rng, w, h, frames)
    traj["label"] = label
    scene = Scene(rng, w, h, traj, d, photos, distractors=distractors)
    out = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        out[i] = scene.frame(i)
    if not return_params:
        return out
    params = {"label": label, "difficulty": d, "generator": 5, **traj, "shake": scene.shake, "gain": scene.gain,
              "noise_sigma": scene.noise_sigma, "jpeg": scene.jpeg, "blur": scene.blur_exposure, **scene.look}
    return out, params
