"""Frames, the Source interface and the FrameSignal that wakes one consumer of several cameras.

A :class:`Source` is thin and single-threaded: open, read one frame, close. The policy around it (which
frames reach the model, reconnecting, waiting for a device that is not there yet) is the Camera's
(:mod:`edge.capture.base`).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from edge.config import CameraConfig

DEFAULT_FPS = 15.0


@dataclass
class Frame:
    """One frame for the classifier."""

    image: np.ndarray   # BGR uint8 HxWx3, a fresh array per frame
    index: int          # frames read since Camera.open(), skipped ones included, across loops/reconnects
    ts: float           # time.time() at capture; non-live files: open time + index / fps
    gap: bool           # first frame after open, reconnect or loop wrap: reset the online state
    input: np.ndarray | None = None   # the model's input, prepared in the capture thread (Camera.prepare)


def absent(path: str | os.PathLike) -> bool:
    """Nothing is at ``path`` (it, or a folder on its way, does not exist): something that may still appear,
    as a USB camera or adapter a few seconds into boot, or a file being copied in. False for a path that
    exists or cannot work at all (through a regular file, too long, a NUL byte, no permission)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


class Source:
    """One camera kind: open, read, close; no threads, no policy.

    ``live`` sources get latest-frame semantics; ``paced`` ones are paced by the Camera at ``fps``
    (realtime files and synthetic); ``fps`` is valid after open().
    """

    kind = "?"
    live = True
    paced = False

    def __init__(self, cfg: CameraConfig, target: str | int) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.target = target
        self.label = str(target)
        self.fps = cfg.fps or DEFAULT_FPS
        # What the consumer needs of a frame, (min width, min height, min short side): lets a source that
        # can decode smaller (MJPG, decode_scale auto) do so without starving the model. Set before open().
        self.need = (0, 0, 0)

    @property
    def where(self) -> str:
        """Message prefix: ``camera door: /dev/video0``."""
        return f"camera {self.name}: {self.label}"

    def open(self) -> None:
        """Open (or reopen) the source.

        Raises:
            CaptureError: the device or stream cannot be opened (exit 69).
            InputError: a file is missing or not a video (exit 66).
        """
        raise NotImplementedError

    def away(self) -> bool:
        """After a failed open: is the device only not there yet, so that waiting for it can help (a camera
        with ``at_start: retry``)? A stream may come up later (a camera still booting, a network not up
        yet); sources with a path answer from the path (:func:`absent`)."""
        return True

    def read(self) -> np.ndarray | None:
        """The next BGR frame; None at the clean end of a file.

        Raises:
            CaptureError: a live source failed to deliver a frame.
        """
        raise NotImplementedError

    def skip(self) -> bool:
        """Advance past the next frame without producing an image (a frame the model will not see);
        False at the clean end of a file. Sources that can, skip the decode (OpenCV: grab without
        retrieve, which for a V4L2 MJPG camera skips the JPEG decode).

        Raises:
            CaptureError: a live source failed to deliver a frame.
        """
        return self.read() is not None

    def close(self) -> None:
        """Release the device; safe to call twice or when not open."""
        raise NotImplementedError


class FrameSignal:
    """Wakes one consumer of several cameras when any of them has a frame (or ends), instead of polling.

    The consumer reads :meth:`count` before it looks at the cameras, and if none had a frame, waits for
    the count to move on: a frame that arrived in between is never slept through.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._n = 0

    def notify(self) -> None:
        with self._cond:
            self._n += 1
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return self._n

    def wait(self, seen: int, timeout: float) -> bool:
        """Until the count differs from ``seen`` (True) or ``timeout`` s pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n != seen, timeout)
