"""Frames for the player: one JPEG per frame, frame-accurate, from a kept-open decoder per file.

Browsers do not play MJPG AVI or MPEG-4 part 2, so the player shows JPEGs (measured in docs/studio.md:
a frame costs a few ms to decode and encode, and a stepped-back frame comes from the browser's cache).
Each file keeps its ``cv2.VideoCapture`` open at its position: the next frame is one read, a short jump
forward is grabs, anything else a seek (exact for MJPG, and for mp4v as checked in the tests).
"""
from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.studio.settings import StudioError

logger = logging.getLogger(__name__)

QUALITY = 85
COUNT_BY_DECODING = 600      # frames: a file this short is counted by grabbing (exact), longer: the container's
_FORWARD = 16                # frames skipped by grabbing rather than seeking
_READERS = 4
_JPEG_BYTES = 64 << 20


def _sig(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError as e:
        raise StudioError(404, f"video {path.name}: {e.strerror or e}") from None
    return str(path), st.st_size, st.st_mtime_ns


def undecodable(path: Path, what: str = "cannot be decoded (not a video OpenCV can read)") -> StudioError:
    return StudioError(422, f"video {path.name}: {what}")


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.cap: Any = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            self.cap.release()
            raise undecodable(path)
        self.pos = 0
        self.lock = threading.Lock()
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = float(fps) if 0 < fps < 1000 else 15.0
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= COUNT_BY_DECODING:
            count = 0
            probe = cv2.VideoCapture(str(path))
            while probe.grab():
                count += 1
            probe.release()
        self.frames = count
        if count == 0:
            self.cap.release()
            raise undecodable(path, "no frame can be decoded")

    def read(self, i: int) -> np.ndarray:
        with self.lock:
            if self.cap is None:   # evicted from the LRU by another request meanwhile: open it again
                self.cap, self.pos = cv2.VideoCapture(str(self.path)), 0
            if not self.pos <= i <= self.pos + _FORWARD:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                self.pos = i
            while self.pos < i:
                if not self.cap.grab():
                    break
                self.pos += 1
            ok, img = self.cap.read() if self.pos == i else (False, None)
            if not ok:
                self.pos = 1 << 30   # unknown: the next read seeks
                raise StudioError(404, f"video {self.path.name}: no frame {i} (it has {self.frames})")
            self.pos = i + 1
            return img

    def close(self) -> None:
        """Release the decoder, never while another thread reads from it (the reader's lock)."""
        with self.lock:
            if self.cap is not None:
                self.cap.release()
                self.cap = None


class Frames:
    """Kept-open readers (a few files) and an LRU of encoded JPEGs."""

    def __init__(self) -> None:
        self._readers: collections.OrderedDict[tuple, _Reader] = collections.OrderedDict()
        self._jpegs: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def reader(self, path: Path) -> _Reader:
        key = _sig(path)
        with self._lock:
            r = self._readers.get(key)
            if r is not None:
                self._readers.move_to_end(key)
                return r
        r = _Reader(path)
        with self._lock:
            self._readers[key] = r
            while len(self._readers) > _READERS:
                self._readers.popitem(last=False)[1].close()
        return r

    def info(self, path: Path) -> dict[str, Any]:
        r = self.reader(path)
        return {"frames": r.frames, "fps": round(r.fps, 3), "width": r.width, "height": r.height,
                "duration_s": round(r.frames / r.fps, 3)}

    def jpeg(self, path: Path, i: int, width: int | None = None) -> bytes:
        r = self.reader(path)
        if not 0 <= i < r.frames:
            raise StudioError(404, f"video {path.name}: no frame {i} (it has {r.frames}: 0..{r.frames - 1})")
        key = (*_sig(path), i, width)
        with self._lock:
            hit = self._jpegs.get(key)
            if hit is not None:
                self._jpegs.move_to_end(key)
                return hit
        img = r.read(i)
        data = encode(img, width)
        with self._lock:
            self._jpegs[key] = data
            self._bytes += len(data)
            while self._bytes > _JPEG_BYTES and self._jpegs:
                self._bytes -= len(self._jpegs.popitem(last=False)[1])
        return data

    def close(self) -> None:
        with self._lock:
            for r in self._readers.values():
                r.close()
            self._readers.clear()
            self._jpegs.clear()


def encode(img: np.ndarray, width: int | None = None) -> bytes:
    if width and 16 <= width < img.shape[1]:
        h = max(2, round(img.shape[0] * width / img.shape[1]))
        img = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise StudioError(500, "JPEG encoding failed")
    return buf.tobytes()
