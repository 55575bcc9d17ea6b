"""The runtime's preprocessing equals training's eval transform, pixel for pixel, into one buffer."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.bundle import InputSpec
from edge.data.dataset import center_crop_frames
from edge.errors import DataError
from edge.preprocess import Preprocessor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """Training's normalisation: T x H x W x 3 uint8 RGB -> T x 3 x H x W float32."""
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("size, crop_scale", [((16, 16), 1.0), ((112, 112), 1.0), ((24, 32), 1.0),
                                              ((56, 56), 0.875)])
def test_matches_center_crop_frames(size, crop_scale):
    pre = Preprocessor(InputSpec(name="frame", size=size, mean=MEAN, std=STD, crop_scale=crop_scale))
    rng = np.random.default_rng(0)
    for hw in [(480, 640), (120, 160), (77, 131), (300, 100), size]:
        frame = rng.integers(0, 256, (*hw, 3), np.uint8)
        x = pre(frame)
        want = _normalise(center_crop_frames(frame[None], size, crop_scale))
        assert x.shape == (1, 3, *size) and x.dtype == np.float32
        np.testing.assert_allclose(x, want, atol=1e-6, rtol=0)


def test_same_buffer_every_time_and_cached_geometry():
    pre = Preprocessor(InputSpec(name="frame", size=(16, 16), mean=MEAN, std=STD))
    rng = np.random.default_rng(1)
    a = pre(rng.integers(0, 256, (48, 64, 3), np.uint8))
    first = a.copy()
    buf = pre._geometry(48, 64)[1]
    b = pre(rng.integers(0, 256, (48, 64, 3), np.uint8))
    assert b is a is pre.out and not np.array_equal(first, b)
    assert pre._geometry(48, 64)[1] is buf  # resize buffer reused, not reallocated
    view = rng.integers(0, 256, (60, 80, 3), np.uint8)[5:53, 8:72]  # a non-contiguous frame
    np.testing.assert_allclose(pre(view), _normalise(center_crop_frames(view[None], (16, 16))), atol=1e-6)


def test_stretch_and_bgr_order():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (30, 50, 3), np.uint8)
    x = Preprocessor(InputSpec(name="frame", size=(16, 24), mean=MEAN, std=STD, resize="stretch"))(frame)
    rgb = cv2.resize(frame, (24, 16), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    np.testing.assert_allclose(x, _normalise(rgb[None]), atol=1e-6)
    xb = Preprocessor(InputSpec(name="frame", size=(16, 24), mean=MEAN, std=STD, colour="BGR", resize="stretch"))(frame)
    bgr = cv2.resize(frame, (24, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(xb, _normalise(bgr[None]), atol=1e-6)


def test_rejects_frames_that_are_not_bgr_uint8():
    pre = Preprocessor(InputSpec(name="frame", size=(16, 16), mean=MEAN, std=STD))
    for bad in (np.zeros((20, 20), np.uint8), np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 3), np.float32)):
        with pytest.raises(DataError, match="expected an H x W x 3 uint8 BGR image"):
            pre(bad)
