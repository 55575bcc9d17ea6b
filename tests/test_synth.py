"""Tests of the procedural motion-clip generator (edge.data.synth), generator 4 (generator 5: test_synth_v5.py).

The motion checks measure the rendered pixels after undoing the camera shake (a zero-mean
nuisance the generator reports in its parameters): swipes follow the centroid of what differs from
the temporal median, zooms compare how much changes in the first and second half of the clip,
no_motion compares the first and last frames. The seeds are fixed, so the tests are deterministic.
"""
from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest

from edge.data.synth import CLASSES, GENERATOR_VERSION, _blend, _object_matrix, generate_dataset, render_clip
from edge.errors import DataError, InputError

W, H = 160, 120


def _clip(label: str, i: int, **kw):
    return render_clip(label, np.random.default_rng([1234, CLASSES.index(label), i]), **kw)


def _undo_shake(clip: np.ndarray, shake: np.ndarray) -> np.ndarray:
    """Frames as float32, shifted back by the camera shake and lightly blurred against noise."""
    h, w = clip.shape[1:3]
    return np.stack([cv2.GaussianBlur(cv2.warpAffine(f.astype(np.float32), np.float32([[1, 0, -sx], [0, 1, -sy]]),
                                                     (w, h), borderMode=cv2.BORDER_REFLECT_101), (0, 0), 1.0)
                     for f, (sx, sy) in zip(clip, shake, strict=False)])


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel change |b - a| above the noise, after matching b's global gain (lighting flicker)
    to a's; pixels near saturation or the border count as unchanged."""
    ok = (np.minimum(a, b).min(axis=2) > 10) & (np.maximum(a, b).max(axis=2) < 245)
    ok[:4], ok[-4:], ok[:, :4], ok[:, -4:] = False, False, False, False
    if ok.sum() < 100:
        return np.zeros(a.shape[:2], np.float32)
    d = np.where(ok, np.abs(b * (np.median(a[ok]) / max(np.median(b[ok]), 1e-3)) - a).max(axis=2), 0)
    med = np.median(d)
    return np.maximum(d - med - 6 * np.median(np.abs(d - med)) - 8, 0)


def _track(frames: np.ndarray) -> np.ndarray:
    """Per-frame (x, y) centroid of the change against the temporal median (NaN: nothing moved)."""
    bg = np.median(frames, axis=0)
    yy, xx = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    out = []
    for f in frames:
        wt = _change(bg, f)
        s = wt.sum()
        out.append(((wt * xx).sum() / s, (wt * yy).sum() / s) if s > 1e-3 else (np.nan, np.nan))
    return np.array(out)


def _displacement(label: str, i: int) -> np.ndarray:
    clip, p = _clip(label, i, return_params=True)
    c = _track(_undo_shake(clip, p["shake"]))
    with warnings.catch_warnings():  # an all-NaN end (object not seen) counts as no displacement
        warnings.simplefilter("ignore", RuntimeWarning)
        d = np.nanmean(c[-6:], axis=0) - np.nanmean(c[:6], axis=0)
    return np.nan_to_num(d)


def test_classes_order():
    assert CLASSES == ("no_motion", "swipe_left", "swipe_right", "swipe_up", "swipe_down",
                       "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw")


@pytest.mark.parametrize("label", CLASSES)
def test_render_shape_and_dtype(label):
    clip = render_clip(label, np.random.default_rng(0), size=(64, 48), frames=8)
    assert clip.shape == (8, 48, 64, 3) and clip.dtype == np.uint8
    assert clip.std() > 1  # not blank


def test_render_is_deterministic():
    a = render_clip("zoom_in", np.random.default_rng(7))
    b = render_clip("zoom_in", np.random.default_rng(7))
    c = render_clip("zoom_in", np.random.default_rng(8))
    assert a.shape == (24, H, W, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_arguments():
    with pytest.raises(DataError):
        render_clip("wave", np.random.default_rng(0))
    with pytest.raises(DataError):
        render_clip("no_motion", np.random.default_rng(0), frames=1)


@pytest.mark.parametrize("label", CLASSES)
def test_shake_has_no_drift(label):
    for i in range(3):
        _, p = _clip(label, i, return_params=True)
        assert p["shake"].shape == (24, 2)
        assert np.allclose(p["shake"].mean(axis=0), 0, atol=1e-9)
        assert np.abs(p["shake"]).max() < 8
        trend = np.polyfit(np.arange(24), p["shake"], 1)[0] * 23  # fitted drift over the clip
        assert np.abs(trend).max() < 5, trend


@pytest.mark.parametrize("label,axis,sign", [("swipe_left", 0, -1), ("swipe_right", 0, 1),
                                             ("swipe_up", 1, -1), ("swipe_down", 1, 1)])
def test_swipe_direction_measured(label, axis, sign):
    for i in range(3):
        d = _displacement(label, i)
        assert sign * d[axis] > 10, (label, i, d)  # travel >= 30% of the frame; the centroid measure underestimates it
        assert abs(d[axis]) > abs(d[1 - axis]), (label, i, d)


def _net_change(label: str, i: int) -> float:
    """Fraction of pixels that differ between the first and the last frame, shake undone."""
    clip, p = _clip(label, i, return_params=True)
    f = _undo_shake(clip, p["shake"])
    return float((_change(f[0], f[-1]) > 0).mean())


def test_no_motion_has_no_net_displacement():
    for i in (0, 3, 5, 11, 15):  # 5, 11, 15 wobble in place
        _, p = _clip("no_motion", i, return_params=True)
        assert p["cx"][0] == pytest.approx(p["cx"][-1]) and p["cy"][0] == pytest.approx(p["cy"][-1])
        assert _net_change("no_motion", i) < 0.01  # last frame == first frame, up to noise
    # The same measure sees a swipe (so it is not blind).
    assert np.median([_net_change("swipe_left", i) for i in range(4)]) > 0.01


@pytest.mark.parametrize("label", ["zoom_in", "zoom_out"])
def test_zoom_direction_measured(label):
    """Area changed from the first to the middle frame vs from the middle to the last frame:
    a growing object changes more in the second half (by about the zoom factor)."""
    ratios = []
    for i in range(5):
        clip, p = _clip(label, i, return_params=True)
        f = _undo_shake(clip, p["shake"])
        m = len(f) // 2
        ratios.append(((_change(f[m], f[-1]) > 0).sum() + 1) / ((_change(f[0], f[m]) > 0).sum() + 1))
        assert np.allclose(p["cx"], p["cx"][0]) and np.allclose(p["cy"], p["cy"][0])  # fixed centre
    ratios = np.array(ratios)
    if label == "zoom_in":
        assert np.median(ratios) > 1.2 and (ratios > 1).sum() >= 4, ratios
    else:
        assert np.median(ratios) < 1 / 1.2 and (ratios < 1).sum() >= 4, ratios


def test_rotation_convention_on_screen():
    """A mark east of the pivot, turned by -90 degrees (what rotate_cw does), lands south of it
    (larger y): clockwise as displayed."""
    sprite = np.zeros((21, 21, 4), np.float32)
    sprite[9:12, 16:19] = (255, 255, 255, 1)  # mark centred 7 px east of the pivot (10, 10)
    for angle, expected in [(0, (7, 0)), (-90, (0, 7)), (90, (0, -7)), (-45, (4.95, 4.95))]:
        frame = np.zeros((60, 60, 3), np.float32)
        _blend(frame, sprite, _object_matrix(30, 30, 1.0, angle, (10, 10)))
        wt = frame[..., 0]
        yy, xx = np.mgrid[0:60, 0:60]
        offset = ((wt * xx).sum() / wt.sum() - 30, (wt * yy).sum() / wt.sum() - 30)
        assert offset == pytest.approx(expected, abs=0.3), angle


@pytest.mark.parametrize("label,sign", [("rotate_cw", -1), ("rotate_ccw", 1)])
def test_rotation_direction_params(label, sign):
    for i in range(3):
        _, p = _clip(label, i, return_params=True)
        step = np.diff(p["angle"])
        assert np.all(sign * step > 0), step  # turns in every frame, the same way
        assert 60 - 1e-6 <= abs(p["angle"][-1] - p["angle"][0]) <= 270 + 1e-6
        assert np.allclose(p["cx"], p["cx"][0]) and np.allclose(p["cy"], p["cy"][0])


def test_every_window_moves():
    """Progress never stalls: every 8-frame window of a swipe travels a good part of the total."""
    for i in range(3):
        _, p = _clip("swipe_right", i, return_params=True)
        travel = p["cx"][-1] - p["cx"][0]
        assert np.all(np.diff(p["cx"]) > 0)
        assert (p["cx"][7:] - p["cx"][:-7]).min() > 0.15 * travel


def _read(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return np.array(frames)


def test_generate_dataset(tmp_path):
    size, frames = (64, 48), 8
    s1 = generate_dataset(tmp_path / "a", per_class=1, seed=3, size=size, frames=frames, fps=10.0, generator=4)
    assert s1 == {"root": str(tmp_path / "a"), "labels": list(CLASSES), "per_class": 1, "seed": 3,
                  "clips": 9, "frames": 8, "size": [64, 48], "fps": 10.0, "generator": 4,
                  "difficulty": None}
    assert GENERATOR_VERSION == 5  # the default of generate_dataset; generator 4 stays reproducible
    assert json.loads((tmp_path / "a" / "synth.json").read_text()) == s1
    assert (tmp_path / "a" / "labels.txt").read_text().split() == list(CLASSES)
    for label in CLASSES:
        video = _read(tmp_path / "a" / label / f"{label}_s3_00000.mp4")
        assert video.shape == (frames, 48, 64, 3)
    # Same seed, more clips per class: clip 0 decodes to the same frames (independent of per_class).
    generate_dataset(tmp_path / "b", per_class=2, seed=3, size=size, frames=frames, fps=10.0, generator=4)
    name = "swipe_up/swipe_up_s3_00000.mp4"
    assert np.array_equal(_read(tmp_path / "a" / name), _read(tmp_path / "b" / name))
    assert (tmp_path / "b" / "swipe_up" / "swipe_up_s3_00001.mp4").is_file()


def test_generate_dataset_errors(tmp_path):
    with pytest.raises(DataError):
        generate_dataset(tmp_path, per_class=0, seed=0)
    (tmp_path / "no_motion" / "no_motion_s0_00000.mp4").mkdir(parents=True)  # blocks the writer
    with pytest.raises(InputError, match="no_motion_s0_00000.mp4"):
        generate_dataset(tmp_path, per_class=1, seed=0, size=(32, 32), frames=2)
