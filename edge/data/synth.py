"""Procedural motion clips: a synthetic dataset whose classes differ only over time.

The entry points (:func:`render_clip`, :func:`generate_dataset`, the class names) serve both generators;
this module's drawing code is generator 4, kept byte for byte. Generator 5 (scenes with photographs, an
arm, distractors, tilts in depth, slow motions; the extra classes) is in :mod:`edge.data.synth_scene`
and :mod:`edge.data.synth_motion`; docs/dataset.md describes both.

Generator 4: each clip shows one object (random shape, size, texture, colour, contrast, blur) over a random
textured background and moves it with one of the ``CLASSES`` motions. The object's look, the
background, lighting and noise are drawn from the same distributions for every class (positions
differ only as far as the motion needs: a swipe starts on the side it comes from), so a model has
to learn the motion rather than the generator's look. Nuisances
shared by all classes: slow global lighting flicker, a static illumination ramp, zero-mean camera
shake (never a net drift, which would look like a swipe), sensor noise and JPEG artefacts.

Conventions: image coordinates (x to the right, y down). Angles are in degrees in the convention
of ``cv2.getRotationMatrix2D``, where a positive angle turns counter-clockwise *as displayed*;
``rotate_cw`` therefore makes the angle decrease. Motion is continuous over the whole clip (no
pause at either end), so every window of consecutive frames shows it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from edge.data.occluders import check_distractors
from edge.data.synth_classes import ALL_CLASSES, CLASS_SETS, CLASSES, EXTRA_CLASSES, resolve_classes
from edge.errors import DataError, InputError

logger = logging.getLogger(__name__)

__all__ = ["ALL_CLASSES", "CLASS_SETS", "CLASSES", "EXTRA_CLASSES", "GENERATORS", "GENERATOR_VERSION",
           "generate_dataset", "render_clip", "resolve_classes"]
GENERATOR_VERSION = 5  # the newest (dataset synth's default); bump when the clips a seed gives change
GENERATORS = (4, 5)    # 4: one object over a procedural background (this module); 5: scenes (synth_scene)
# Generator 5's revision, in synth.json: 2 marks every circle (a plain disc's turn was invisible). A folder made by an
# older revision is not "already generated" for a recipe.
REVISIONS = {5: 2}
SHAPES = ("circle", "ellipse", "rectangle", "triangle", "polygon", "star", "blob", "hand")
OBJ_TEXTURES = ("flat", "noise", "stripes", "checker", "gradient")
BG_TEXTURES = ("noise", "blurred_noise", "gradient", "stripes", "rects", "checker")
_SWIPES = {"swipe_left": (-1, 0), "swipe_right": (1, 0), "swipe_up": (0, -1), "swipe_down": (0, 1)}
# Standard normal quantiles of 256 equiprobable bins: random bytes -> Gaussian noise, via cv2.LUT
# (several times faster than Generator.standard_normal, which dominated the render time).
_GAUSS_LUT = np.array([[NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)]], np.float32)
_SUB = 16  # sub-pixel factor for cv2 drawing calls (shift=4)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / (np.linalg.norm(v) + 1e-9)


def _pattern(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    """A ``h x w`` float32 pattern in [0, 1] of the given texture kind (used for both layers)."""
    xx, yy = _grid(h, w)
    th = rng.uniform(0, np.pi)
    u = xx * np.cos(th) + yy * np.sin(th)
    scale = max(w, h)
    if kind == "flat":
        return np.zeros((h, w), np.float32)
    if kind == "noise":  # smooth value noise: coarse random grid, bicubic upsampling
        cell = rng.uniform(0.05, 0.25) * scale
        small = rng.random((max(2, round(h / cell)), max(2, round(w / cell)))).astype(np.float32)
        return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
    if kind == "blurred_noise":
        v = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), rng.uniform(0.7, 3.0))
        return (v - v.min()) / (np.ptp(v) + 1e-6)
    if kind == "gradient":
        return (u - u.min()) / (np.ptp(u) + 1e-6)
    if kind == "stripes":
        period = max(rng.uniform(0.08, 0.3) * scale, 4.0)
        v = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:  # hard-edged stripes
            v = np.clip((v - 0.5) * rng.uniform(3, 20) + 0.5, 0, 1)
        return v.astype(np.float32)
    if kind == "checker":
        cell = max(rng.uniform(0.08, 0.25) * scale, 3.0)
        v = -xx * np.sin(th) + yy * np.cos(th)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    raise AssertionError(kind)


def _two_tone(v: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    return (c1 + v[..., None] * (c2 - c1)).astype(np.float32)


def _background(rng: np.random.Generator, w: int, h: int, difficulty: float = 1.0) -> np.ndarray:
    """A static ``h x w x 3`` float32 background in [0, 255]: texture, blur, brightness, contrast."""
    kind = str(rng.choice(BG_TEXTURES))
    c1, c2 = rng.random(3), rng.random(3)
    if kind == "rects":  # clutter: random filled rectangles
        img = np.empty((h, w, 3), np.float32)
        img[:] = c1
        for _ in range(int(rng.integers(4, 25))):
            x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
            rw, rh = (rng.uniform(0.05, 0.5, 2) * (w, h)).astype(int)
            cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), rng.random(3).tolist(), -1)
    else:
        img = _two_tone(_pattern(rng, kind, w, h), c1, c2)
    if rng.random() < 0.4:  # a second, fainter layer
        layer = _pattern(rng, str(rng.choice(BG_TEXTURES[:4])), w, h)
        img = img * 0.7 + 0.3 * _two_tone(layer, rng.random(3), rng.random(3))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.5))
    img = rng.uniform(0.12, 0.82) + (img - img.mean()) * rng.uniform(0.05, 0.05 + 1.05 * difficulty)
    return (np.clip(img, 0, 1) * 255).astype(np.float32)


def _ipt(p: tuple[float, float]) -> tuple[int, int]:
    """A point (or ellipse axes) in the fixed-point form of cv2 drawing calls with shift=4."""
    return round(p[0] * _SUB), round(p[1] * _SUB)


def _pts(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(points * _SUB).astype(np.int32).reshape(-1, 1, 2)]


def _draw_shape(mask: np.ndarray, shape: str, rng: np.random.Generator, c: float, r: float) -> None:
    """Draw a filled, anti-aliased ``shape`` (255) in ``mask``, inside the circle (c, c, r)."""
    aa, sh = cv2.LINE_AA, 4
    if shape == "circle":
        cv2.circle(mask, _ipt((c, c)), round(r * _SUB), 255, -1, aa, sh)
    elif shape == "ellipse":
        cv2.ellipse(mask, _ipt((c, c)), _ipt((r, r * rng.uniform(0.35, 0.75))), 0, 0, 360, 255, -1, aa, sh)
    elif shape == "hand":  # palm, four fanned fingers and a thumb, all ellipses
        cv2.ellipse(mask, _ipt((c, c + 0.25 * r)), _ipt((0.42 * r, 0.47 * r)), 0, 0, 360, 255, -1, aa, sh)
        spread, side = rng.uniform(3, 12), rng.choice([-1.0, 1.0])
        fingers = [(c + (k - 1.5) * 0.22 * r, c - 0.05 * r, -90 + (k - 1.5) * spread, 0.75 - 0.12 * abs(k - 1.5))
                   for k in range(4)]
        fingers.append((c + side * 0.3 * r, c + 0.3 * r, -90 + side * rng.uniform(45, 75), 0.6))
        for bx, by, deg, rel in fingers:
            d = np.array([np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))])
            length = r * rel * rng.uniform(0.85, 1.15)
            while np.hypot(bx + d[0] * length - c, by + d[1] * length - c) > 0.97 * r:
                length *= 0.95
            ctr_f = (bx + d[0] * length / 2, by + d[1] * length / 2)
            cv2.ellipse(mask, _ipt(ctr_f), _ipt((length / 2, 0.1 * r)), deg, 0, 360, 255, -1, aa, sh)
    else:
        if shape == "rectangle":
            phi = np.deg2rad(rng.uniform(18, 45))
            hw, hh = r * np.cos(phi), r * np.sin(phi)
            pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        else:
            n = {"triangle": 3, "polygon": int(rng.integers(4, 9)), "star": 2 * int(rng.integers(4, 8))}
            n_pts = n.get(shape, 48)
            ang = np.linspace(0, 2 * np.pi, n_pts, endpoint=False)
            rad = np.ones(n_pts)
            if shape in ("triangle", "polygon"):
                ang += rng.uniform(-0.25, 0.25, n_pts) * np.pi / n_pts
                rad = rng.uniform(0.8, 1.0, n_pts)
            elif shape == "star":
                rad[1::2] = rng.uniform(0.35, 0.7)
            else:  # blob: smooth random radius
                for k in range(2, 5):
                    rad = rad + rng.uniform(0, 0.25) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
            pts = np.stack([np.cos(ang), np.sin(ang)], 1) * (r * rad / rad.max())[:, None]
        cv2.fillPoly(mask, _pts(pts + c), 255, aa, sh)


def _object_colour(rng: np.random.Generator, bg_mean: np.ndarray, difficulty: float = 1.0) -> np.ndarray:
    """A colour in [0, 1]: usually well apart from the background, sometimes low-contrast."""
    if rng.random() < 0.25 * difficulty:
        d = _unit(rng) * rng.uniform(0.1, 0.2)
        c = bg_mean + d if np.all((bg_mean + d >= 0) & (bg_mean + d <= 1)) else bg_mean - d
        return np.clip(c, 0, 1)
    c = rng.random(3)
    for _ in range(8):
        if np.abs(c - bg_mean).max() > 0.25:
            break
        c = rng.random(3)
    return c


def _sprite(rng: np.random.Generator, diam: float, bg_mean: np.ndarray,
            difficulty: float = 1.0) -> tuple[np.ndarray, dict]:
    """The object, drawn once per clip at ``diam`` pixels: ``s x s x 4`` premultiplied BGR*alpha
    (0..255) and alpha (0..1), float32. Always rotation-visible (see the mark below)."""
    r = diam / 2
    s = int(np.ceil(diam)) + 4
    c = (s - 1) / 2
    mask = np.zeros((s, s), np.uint8)
    shape = str(rng.choice(SHAPES))
    _draw_shape(mask, shape, rng, c, r)
    c1 = _object_colour(rng, bg_mean, difficulty)
    c2 = np.clip(c1 + _unit(rng) * rng.uniform(0.25, 0.6), 0, 1)
    kind = str(rng.choice(OBJ_TEXTURES))
    tex = _two_tone(_pattern(rng, kind, s, s), c1, c2)
    # Every object carries one off-centre mark in a contrasting colour (every class, so the mark does not
    # give the class away): shapes and textures with rotational symmetry (squares, stars, stripes,
    # checks) would otherwise make a turn by a few tens of degrees look like a turn the other way.
    a = rng.uniform(0, 2 * np.pi)
    mark = (c + 0.5 * r * np.cos(a), c + 0.5 * r * np.sin(a))
    colour = np.where(c1 > 0.5, c1 - 0.5, c1 + 0.5)
    cv2.circle(tex, _ipt(mark), round(rng.uniform(0.2, 0.3) * r * _SUB), colour.tolist(), -1, cv2.LINE_AA, 4)
    if rng.random() < 0.3:  # shading from a light on one side
        xx, yy = _grid(s, s)
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((xx - c) * np.cos(a) + (yy - c) * np.sin(a)) / (r + 1e-6)
        tex *= np.clip(1 - rng.uniform(0.1, 0.35) * (ramp + 1), 0.2, 1)[..., None]
    alpha = mask.astype(np.float32) / 255
    mom = cv2.moments(alpha)  # pivot of rotation / zoom: the object's centroid
    pivot = (mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]) if mom["m00"] > 0 else (c, c)
    sprite = np.concatenate([tex * 255 * alpha[..., None], alpha[..., None]], axis=2)
    if rng.random() < 0.5:  # defocus
        sprite = cv2.GaussianBlur(sprite, (0, 0), rng.uniform(0.4, 1.5))
    return sprite.astype(np.float32), {"shape": shape, "texture": kind, "pivot": pivot}


def _progress(rng: np.random.Generator, n: int) -> np.ndarray:
    """Monotone 0 -> 1 over ``n`` frames with a mild speed variation; never pauses."""
    t = np.arange(n - 1)
    v = 1 + rng.uniform(0, 0.35) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t / max(n - 1, 1)
                                          + rng.uniform(0, 2 * np.pi))
    return np.concatenate([[0.0], np.cumsum(v)]) / v.sum()


def _trajectory(label: str, rng: np.random.Generator, w: int, h: int, n: int) -> dict:
    """Per-frame object centre ``cx, cy``, diameter ``size`` (pixels) and ``angle`` (degrees)."""
    p = _progress(rng, n)
    short = min(w, h)
    diam = rng.uniform(0.25, 0.45) * short
    angle = rng.uniform(-180, 180) + np.zeros(n)
    size = diam + np.zeros(n)
    present = True
    if label in _SWIPES:
        sx, sy = _SWIPES[label]
        along, across = (w, h) if sx else (h, w)
        travel = rng.uniform(0.5, 0.8) * along
        lo, hi = 0.1 * along, 0.9 * along
        start = rng.uniform(lo + travel, hi) if (sx or sy) < 0 else rng.uniform(lo, hi - travel)
        pos = start + (sx or sy) * travel * p  # along the motion
        off = rng.uniform(0.2, 0.8) * across + travel * (rng.uniform(-0.12, 0.12) * p
                                                         + rng.uniform(-0.08, 0.08) * np.sin(np.pi * p))
        off = np.clip(off, 0.1 * across, 0.9 * across)
        cx, cy = (pos, off) if sx else (off, pos)
        angle += rng.uniform(-15, 15) * p
        size *= 1 + rng.uniform(-0.1, 0.1) * p
    elif label == "no_motion":
        cx = rng.uniform(0.12, 0.88) * w + np.zeros(n)
        cy = rng.uniform(0.12, 0.88) * h + np.zeros(n)
        present = rng.random() > 0.15
        if rng.random() < 0.5:  # wobble in place: whole periods, so no net displacement
            ph = 2 * np.pi * rng.integers(1, 4) * np.arange(n) / max(n - 1, 1)
            cx = cx + rng.uniform(0.5, 3) * np.sin(ph + rng.uniform(0, 2 * np.pi))
            cy = cy + rng.uniform(0.5, 3) * np.sin(ph + rng.uniform(0, 2 * np.pi))
            angle += rng.uniform(0, 4) * np.sin(ph + rng.uniform(0, 2 * np.pi))
            size *= 1 + rng.uniform(0, 0.04) * np.sin(ph + rng.uniform(0, 2 * np.pi))
    else:  # zoom / rotate about a fixed, central-ish centre
        cx = rng.uniform(0.3, 0.7) * w + np.zeros(n)
        cy = rng.uniform(0.3, 0.7) * h + np.zeros(n)
        if label.startswith("zoom"):
            k = rng.uniform(1.8, 3.0)
            size = diam * k ** ((p if label == "zoom_in" else 1 - p) - 0.5)
            angle += rng.uniform(-10, 10) * p
        else:
            # 90-170 degrees over the clip: at most ~25 degrees between the frames a model sees (one in
            # three), well below half the period of the most symmetric shapes (a five-point star: 72).
            angle += (-1 if label == "rotate_cw" else 1) * rng.uniform(90, 170) * p
    return {"present": present, "cx": cx, "cy": cy, "size": size, "angle": angle}


def _object_matrix(cx: float, cy: float, scale: float, angle: float, pivot: tuple[float, float]) -> np.ndarray:
    """2x3 affine map of a sprite: rotate by ``angle`` (cv2 convention, positive = counter-clockwise
    on screen) and scale about the sprite point ``pivot``, which lands at ``(cx, cy)``."""
    m = cv2.getRotationMatrix2D((float(pivot[0]), float(pivot[1])), float(angle), float(scale))
    m[0, 2] += cx - pivot[0]
    m[1, 2] += cy - pivot[1]
    return m


def _blend(frame: np.ndarray, sprite: np.ndarray, m: np.ndarray) -> None:
    """Warp the premultiplied ``sprite`` with ``m`` and alpha-blend it into ``frame`` in place,
    warping only the bounding box it lands in."""
    h, w = frame.shape[:2]
    s = sprite.shape[0]
    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float64) @ m.T
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (w, h))
    if x1 <= x0 or y1 <= y0:
        return
    m2 = m.copy()
    m2[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(sprite, m2, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = frame[y0:y1, x0:x1]
    roi *= 1 - patch[..., 3:]
    roi += patch[..., :3]


def render_clip(label: str, rng: np.random.Generator, size: tuple[int, int] = (160, 120),
                frames: int = 24, *, difficulty: float | None = None,
                return_params: bool = False, generator: int = 4,
                distractors: float | None = None) -> np.ndarray | tuple[np.ndarray, dict]:
    """Render one clip of class ``label``: ``frames x H x W x 3`` uint8 BGR (``size`` is (W, H)).

    ``generator`` 4 (the default here: what the demo, the synthetic camera, the bench and the default
    model's calibration set render, byte for byte as before generator 5) draws one object over a
    procedural background and knows the nine ``CLASSES``; 5 (:mod:`edge.data.synth_scene`) draws a
    scene (photographs, an arm, distractors, tilts in depth, slow motions...) and knows ``ALL_CLASSES``.

    With ``return_params`` also return the per-frame parameters: ``cx, cy, size, angle`` of the
    object (centre without shake, diameter in pixels, degrees with positive = counter-clockwise
    on screen), ``shake`` (frames x 2, pixels), ``gain``, and the clip's look (shape, texture...).
    ``difficulty`` in [0, 1] scales the nuisances (background contrast, low-contrast objects, shake,
    sensor noise, JPEG); ``None`` draws it uniformly per clip, so a dataset mixes plain scenes that
    make the motion easy to discover with cluttered ones. ``distractors`` (generator 5): the chance a scene
    has moving distractors (``None``: 0.25 + 0.5 x difficulty).
    Raises:
        DataError: unknown generator or label, fewer than 2 frames or a frame smaller than 16 x 16.
    """
    if generator not in GENERATORS:
        raise DataError(f"synthetic generator {generator!r} is unknown (known: {', '.join(map(str, GENERATORS))})")
    known = CLASSES if generator == 4 else ALL_CLASSES
    if label not in known:
        raise DataError(f"unknown synthetic class {label!r} for generator {generator} (known: {', '.join(known)})")
    w, h = int(size[0]), int(size[1])
    if frames < 2 or w < 16 or h < 16:
        raise DataError(f"synthetic clip needs >= 2 frames of >= 16x16 pixels, got {frames} of {w}x{h}")
    if generator == 5:
        from edge.data.synth_scene import render_clip_v5
        return render_clip_v5(label, rng, (w, h), int(frames), difficulty, return_params, distractors=distractors)
    n = int(frames)
    d = float(rng.uniform(0, 1)) if difficulty is None else float(np.clip(difficulty, 0, 1))
    bg = _background(rng, w, h, d)
    traj = _trajectory(label, rng, w, h, n)
    sprite_diam = float(traj["size"].max())
    sprite, look = _sprite(rng, sprite_diam, bg.mean(axis=(0, 1)) / 255, d)
    pivot = look.pop("pivot")
    # Camera shake: small zero-mean jitter (sometimes smoothed); its mean is removed, no drift.
    shake = rng.normal(0, 0 if rng.random() < 0.15 else rng.uniform(0.3, 2.0) * d, (n, 2))
    if rng.random() < 0.5:
        shake = (np.vstack([shake[:1], shake[:-1]]) + 2 * shake + np.vstack([shake[1:], shake[-1:]])) / 4
    shake -= shake.mean(axis=0)
    # Lighting: a static illumination ramp times a slow global gain flicker.
    t = np.arange(n)
    gain = (1 + rng.uniform(0, 0.12) * np.sin(2 * np.pi * t / rng.uniform(8, 48) + rng.uniform(0, 2 * np.pi))
            + rng.normal(0, rng.uniform(0, 0.02), n))
    xx, yy = _grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)) / (max(w, h) / 2)
    light = (1 + (rng.uniform(-0.3, 0.3) if rng.random() < 0.5 else 0.0) * ramp)[..., None]
    noise_sigma = rng.uniform(0, 8) * d
    jpeg = rng.random() < 0.5 * d
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        m_shake = np.array([[1, 0, shake[i, 0]], [0, 1, shake[i, 1]]])
        frame = cv2.warpAffine(bg, m_shake, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if traj["present"]:
            m = _object_matrix(traj["cx"][i] + shake[i, 0], traj["cy"][i] + shake[i, 1],
                               traj["size"][i] / sprite_diam, traj["angle"][i], pivot)
            _blend(frame, sprite, m)
        frame *= light * np.float32(gain[i])
        if noise_sigma > 0.5:
            raw = np.frombuffer(rng.bytes(h * w * 3), np.uint8).reshape(h, w, 3)
            frame += cv2.LUT(raw, _GAUSS_LUT) * np.float32(noise_sigma)
        frame += 0.5
        img = np.clip(frame, 0, 255, out=frame).astype(np.uint8)
        if jpeg:
            _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        out[i] = img
    if not return_params:
        return out
    params = {"label": label, "difficulty": d, **traj, "shake": shake, "gain": gain, "noise_sigma": float(noise_sigma),
              "jpeg": bool(jpeg), **look}
    return out, params


def generate_dataset(out: str | Path, per_class: int, seed: int, size: tuple[int, int] = (160, 120),
                     frames: int = 24, fps: float = 15.0, progress: bool = False,
                     difficulty: float | None = None, *, classes: str | list[str] | None = None,
                     generator: int = GENERATOR_VERSION, workers: int = 1, recordings: int = 0,
                     recording_segments: int = 6, distractors: float | None = None) -> dict:
    """Write ``per_class`` clips of every class as ``out/<label>/<label>_s<seed>_<i:05d>.mp4``
    (mp4v), plus ``out/labels.txt`` and ``out/synth.json`` (the returned summary).

    ``classes``: names and sets as :func:`resolve_classes` takes them (default: the nine ``CLASSES``);
    ``generator``: 5 (default) or 4 (the embedded model's data: ``generator=4, seed=1`` is its card's
    held-out set). Clip ``i`` of class ``label`` is rendered from
    ``np.random.default_rng([seed, ALL_CLASSES.index(label), i])``: the same seed gives the same clips,
    whatever ``per_class``, whichever classes are generated with it and however many ``workers``
    (processes: :mod:`edge.data.synth_writer`) write them. Existing files are overwritten.
    ``recordings``: also that many continuous recordings of ``recording_segments`` motions each (generator 5,
    :func:`edge.data.synth_recording.generate_recordings`) in ``out/recordings``, annotated: training takes
    windows of them labelled frame by frame. ``distractors``: see :func:`render_clip` (the clips; recordings
    keep their own).
    Raises:
        DataError: ``per_class`` or ``workers`` < 1, a negative seed, an unknown generator or class.
        InputError: a folder cannot be created or a video file cannot be opened for writing.
    """
    if per_class < 1:
        raise DataError(f"per_class must be >= 1, got {per_class}")
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    if generator not in GENERATORS:
        raise DataError(f"synthetic generator {generator!r} is unknown (known: {', '.join(map(str, GENERATORS))})")
    check_distractors(distractors, generator)
    labels = resolve_classes(classes, generator=generator)
    root = Path(out)
    w, h = int(size[0]), int(size[1])
    from edge.data.synth_writer import ClipJob, write_clips
    jobs = []
    for label in labels:
        folder = root / label
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create {folder}: {e}") from None
        jobs += [ClipJob(label, ALL_CLASSES.index(label), int(seed), i, folder / f"{label}_s{seed}_{i:05d}.mp4",
                         (w, h), int(frames), float(fps), difficulty, int(generator), distractors)
                 for i in range(per_class)]
    if recordings and generator < 5:
        raise DataError(f"recordings are one continuous generator-5 scene each: not with generator {generator}")
    write_clips(jobs, workers, progress)
    if recordings:
        from edge.data.dataset import RECORDINGS
        from edge.data.synth_recording import generate_recordings
        generate_recordings(root / RECORDINGS, recordings, seed, recording_segments, size=(w, h), fps=fps,
                            classes=tuple(labels), workers=workers)
    (root / "labels.txt").write_text("".join(f"{c}\n" for c in labels), encoding="utf-8")
    summary = {"root": str(root), "labels": list(labels), "per_class": int(per_class), "seed": int(seed),
               "clips": len(labels) * int(per_class), "frames": int(frames), "size": [w, h], "fps": float(fps),
               "generator": int(generator), "difficulty": difficulty}
    if generator in REVISIONS:
        summary["revision"] = REVISIONS[generator]
    if distractors is not None:   # only when given: the datasets made before it compare equal
        summary["distractors"] = float(distractors)
    if recordings:
        summary.update(recordings=int(recordings), recording_segments=int(recording_segments))
    if generator >= 5:
        from edge.data.textures import photos
        summary["photos"] = [name for name, _ in photos()]  # empty: procedural textures only (no scikit-image)
    (root / "synth.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %d synthetic clips to %s", summary["clips"], root)
    return summary
