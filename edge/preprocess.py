"""Camera frame (BGR uint8, any size) -> graph input (1 x 3 x H x W float32), into one preallocated array.

Pixel for pixel the same as the training evaluation transform
(:func:`edge.data.dataset.center_crop_frames`, then ``(x / 255 - mean) / std``): the short side is
resized with ``INTER_AREA`` to ``size / crop_scale``, the centre is cropped, and the channels are
reordered and normalised in one pass per channel (``x * scale + offset``, constants computed once).
"""
from __future__ import annotations

import cv2
import numpy as np

from edge.bundle import InputSpec
from edge.errors import DataError


def frame_need(spec: InputSpec) -> tuple[int, int, int]:
    """The smallest camera frame that is not scaled up for this input: (min width, min height, min short
    side). A source that can decode at a reduced size (MJPG) stays at or above it."""
    h, w = int(spec.size[0]), int(spec.size[1])
    if spec.resize == "stretch":
        return (w, h, 0)
    return (0, 0, int(np.ceil(min(h, w) / spec.crop_scale)))


class Preprocessor:
    """Turns frames into ``self.out`` (the same array every call; copy it to keep a result).

    ``mean`` and ``std`` are per channel of the graph input, in the graph's channel order.
    """

    def __init__(self, spec: InputSpec) -> None:
        if spec.resize not in ("short_side_crop", "stretch"):
            raise DataError(f"input.resize {spec.resize!r}: not one of short_side_crop, stretch")
        self.spec = spec
        self.size = (int(spec.size[0]), int(spec.size[1]))
        h, w = self.size
        self.out = np.zeros((1, 3, h, w), np.float32)
        # graph channel c reads BGR channel _src[c]
        self._src = (2, 1, 0) if spec.colour == "RGB" else (0, 1, 2)
        self._scale = [np.float32(1.0 / (255.0 * s)) for s in spec.std]
        self._offset = [np.float32(-m / s) for m, s in zip(spec.mean, spec.std, strict=False)]
        self._geom: dict[tuple[int, int], tuple[tuple[int, int], np.ndarray, np.ndarray]] = {}

    def _geometry(self, h: int, w: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
        """For a frame size: (resize dsize (w, h), uint8 resize buffer, H x W x 3 crop view of it)."""
        geom = self._geom.get((h, w))
        if geom is None:
            oh, ow = self.size
            if self.spec.resize == "stretch":
                rh, rw, y0, x0 = oh, ow, 0, 0
            else:  # exactly as models.dataset.center_crop_frames
                s = min(self.size) / self.spec.crop_scale / min(h, w)
                rh, rw = max(oh, round(h * s)), max(ow, round(w * s))
                y0, x0 = (rh - oh) // 2, (rw - ow) // 2
            buf = np.empty((rh, rw, 3), np.uint8)
            geom = ((rw, rh), buf, buf[y0:y0 + oh, x0:x0 + ow])
            if len(self._geom) > 8:  # a source that keeps changing size: do not grow without bound
                self._geom.clear()
            self._geom[(h, w)] = geom
        return geom

    def __call__(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """BGR uint8 H x W x 3 -> ``out`` (default ``self.out``; 1 x 3 x H x W float32, normalised).

        Raises:
            DataError: the frame is not an H x W x 3 uint8 image.
        """
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise DataError(f"frame: expected an H x W x 3 uint8 BGR image, got shape {frame.shape} "
                            f"dtype {frame.dtype}")
        dsize, buf, crop = self._geometry(frame.shape[0], frame.shape[1])
        cv2.resize(frame, dsize, dst=buf, interpolation=cv2.INTER_AREA)
        result = self.out if out is None else out
        dst = result[0]
        for c in range(3):
            o = dst[c]
            np.multiply(crop[:, :, self._src[c]], self._scale[c], out=o)
            np.add(o, self._offset[c], out=o)
        return result


class PreprocessRing:
    """A camera's own preprocessing, run in its capture thread: each call fills the next of ``n``
    buffers, so a frame's input stays intact while later frames are prepared (the capture thread holds
    at most ``n - 2`` frames ahead of the one the inference loop is stepping)."""

    def __init__(self, spec: InputSpec, n: int = 4) -> None:
        self.pre = Preprocessor(spec)
        self._bufs = [np.zeros_like(self.pre.out) for _ in range(n)]
        self._i = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Raises: DataError: the frame is not an H x W x 3 uint8 image."""
        out = self._bufs[self._i]
        self._i = (self._i + 1) % len(self._bufs)
        return self.pre(frame, out)
