"""A camera without hardware: procedural motion clips from :mod:`edge.data.synth`.

``synthetic`` cycles through the motion classes with still stretches in between (like the demo
clip); ``synthetic:<label>`` repeats one class. Frames are rendered small (160x120, as the model's
training data) and upscaled to the configured size, from a fixed seed, so a run is repeatable.
With ``realtime: true`` the Camera paces it at ``fps`` and treats it as live; otherwise it is a
lossless source as fast as rendering goes.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from edge.capture.base import DEFAULT_FPS, Source
from edge.config import CameraConfig
from edge.data.synth import CLASSES, render_clip
from edge.errors import CaptureError

logger = logging.getLogger(__name__)

RENDER_SIZE = (160, 120)   # (w, h) the clips are drawn at
MOTION_FRAMES = 24
STILL_FRAMES = 18
SEED = 7
STILL = "no_motion"
MOTIONS = tuple(c for c in CLASSES if c != STILL)


def parse_label(target: str | int) -> str | None:
    """``synthetic`` -> None (cycle), ``synthetic:zoom_in`` (or a bare label) -> ``zoom_in``."""
    text = str(target).strip()
    if text == "synthetic":
        return None
    return text.split(":", 1)[1].strip() if text.startswith("synthetic:") else text


class SyntheticSource(Source):
    """Rendered motion clips, one frame per read; never ends."""

    kind = "synthetic"

    def __init__(self, cfg: CameraConfig, target: str | int) -> None:
        """Check the label here, so a typo fails at start.

        Raises:
            CaptureError: an unknown label (the message lists the known ones).
        """
        super().__init__(cfg, target)
        self.motion = parse_label(target)
        if self.motion is not None and self.motion not in CLASSES:
            raise CaptureError(f"camera {self.name}: unknown synthetic label {self.motion!r} "
                               f"(known: {', '.join(CLASSES)})")
        self.label = "synthetic" if self.motion is None else f"synthetic:{self.motion}"
        self.live = self.paced = cfg.realtime
        self.fps = cfg.fps or DEFAULT_FPS
        w = cfg.width or (round(cfg.height * 4 / 3) if cfg.height else 640)
        self.size = (w, cfg.height or round(w * 3 / 4))
        self.showing: str | None = None  # the class on screen now (for tests and debugging)
        self._rng: np.random.Generator | None = None
        self._clip: np.ndarray | None = None
        self._pos = self._seq = 0

    def open(self) -> None:
        """Start the same sequence again (fixed seed)."""
        self._rng = np.random.default_rng(SEED)
        self._clip, self._pos, self._seq = None, 0, 0
        logger.debug("camera %s: %s %dx%d at %.3g fps%s", self.name, self.label, *self.size, self.fps,
                     ", paced" if self.paced else "")

    def _next_segment(self) -> tuple[str, int]:
        i, self._seq = self._seq, self._seq + 1
        if self.motion is not None:
            return self.motion, MOTION_FRAMES
        return (STILL, STILL_FRAMES) if i % 2 == 0 else (MOTIONS[(i // 2) % len(MOTIONS)], MOTION_FRAMES)

    def read(self) -> np.ndarray:
        if self._rng is None:
            raise CaptureError(f"{self.where}: read while not open")
        if self._clip is None or self._pos >= len(self._clip):
            self.showing, frames = self._next_segment()
            self._clip = render_clip(self.showing, self._rng, size=RENDER_SIZE, frames=frames)
            self._pos = 0
        small = self._clip[self._pos]
        self._pos += 1
        return cv2.resize(small, self.size, interpolation=cv2.INTER_LINEAR)

    def close(self) -> None:
        self._rng, self._clip = None, None
