"""Sources on ``cv2.VideoCapture``: V4L2 devices, video files, stream URLs, GStreamer pipelines.

The capture constructor is injectable (``capture_factory``, default ``cv2.VideoCapture``) so the
tests can put a scripted V4L2 device behind the same calls the real driver gets.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.capture.base import DEFAULT_FPS, Source, absent
from edge.config import CameraConfig
from edge.errors import CaptureError, InputError
from edge.paths import library_path, probe, show_path, usable_name

logger = logging.getLogger(__name__)

CaptureFactory = Callable[..., Any]  # cv2.VideoCapture(target, api[, params]) or a stand-in


@functools.cache
def backends() -> dict[str, bool]:
    """Which video I/O backends this OpenCV build has (from ``cv2.getBuildInformation()``)."""
    info = cv2.getBuildInformation()
    out = {}
    for name in ("FFMPEG", "GStreamer", "V4L/V4L2"):
        m = re.search(rf"^\s*{re.escape(name)}:\s*(\S+)", info, re.M)
        out[name] = bool(m) and m.group(1).upper() != "NO"
    return out


_quiet_lock = threading.Lock()
_quiet_depth = [0, None]  # open probes under way, OpenCV's log level before the first


@contextlib.contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV's own log silenced while a capture opens (a missing device printed ``[ WARN:0@0.4] global
    cap.cpp:212 open VIDEOIO(V4L2): ...`` before our one line); kept with ``OPENCV_LOG_LEVEL`` set or at -vv.
    The level is process-wide: concurrent opens share one save/restore."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None or "OPENCV_LOG_LEVEL" in os.environ or logger.isEnabledFor(logging.DEBUG):
        yield
        return
    with _quiet_lock:
        if _quiet_depth[0] == 0:
            _quiet_depth[1] = log.setLogLevel(log.LOG_LEVEL_SILENT)
        _quiet_depth[0] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth[0] -= 1
            if _quiet_depth[0] == 0:
                log.setLogLevel(_quiet_depth[1])


def fourcc_text(value: float) -> str:
    """``cap.get(CAP_PROP_FOURCC)`` -> ``MJPG`` (``?`` when the driver reports none)."""
    code = int(value)
    text = code.to_bytes(4, "little").decode("ascii", "replace") if 0 < code < 2**32 else ""
    return text if text.strip() and text.isprintable() else "?"


def _fps(value: float) -> float | None:
    return float(value) if 0 < value < 1000 else None  # 0, NaN and driver nonsense mean "unknown"


# imdecode at 1/N
REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_MJPEG = ("MJPG", "mjpg", "MJPEG", "AVRN", "LJPG", "JPEG", "jpeg", "dmb1")
_BAD_PACKETS = 10  # undecodable JPEG packets in a row before a read counts as failed


def pick_scale(setting: str | int, size: tuple[int, int], need: tuple[int, int, int]) -> int:
    """The JPEG decoder's scale for a ``size`` (w, h) frame: ``setting`` when it is a number, for
    ``auto`` the largest of 8, 4, 2 whose scaled frame (the decoder rounds up) still has ``need``'s min
    width, height and short side; 1 when nothing is known of the need."""
    if setting != "auto":
        return int(setting)
    w, h = size
    if not any(need) or w <= 0 or h <= 0:
        return 1
    for s in (8, 4, 2):
        sw, sh = -(-w // s), -(-h // s)
        if sw >= need[0] and sh >= need[1] and min(sw, sh) >= need[2]:
            return s
    return 1


def _bgr(img: np.ndarray) -> np.ndarray:
    """Grey or BGRA frames (some drivers, CONVERT_RGB off) -> 3-channel BGR."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


class OpenCVSource(Source):
    """Common open/read/close over a ``cv2.VideoCapture``."""

    api = cv2.CAP_ANY

    def __init__(self, cfg: CameraConfig, target: str | int, capture_factory: CaptureFactory | None = None) -> None:
        super().__init__(cfg, target)
        self.capture_factory = capture_factory or cv2.VideoCapture
        self._cap: Any = None
        self.scale = 1          # > 1: the capture hands over JPEG packets, decoded here at 1/scale
        self._flag = cv2.IMREAD_COLOR
        self._bad = 0           # undecodable packets so far (logged now and then)
        self._told = False

    def _create(self) -> Any:
        return self.capture_factory(self.target, self.api)

    def _library_name(self) -> str:
        """The file's name for OpenCV: as it is, or ``/proc/self/fd/N`` for a name that is not UTF-8
        (OpenCV crashes on those); the descriptor stays open until close()."""
        self._drop_fd()
        self._fd_cm = library_path(self.target)
        return self._fd_cm.__enter__()

    def _drop_fd(self) -> None:
        cm, self._fd_cm = getattr(self, "_fd_cm", None), None
        if cm is not None:
            cm.__exit__(None, None, None)

    def _open_failed(self) -> Exception:
        return CaptureError(f"{self.where}: cannot open")

    def _configure(self, cap: Any) -> None:
        """Settings after open; the default only reads the frame rate back."""
        self.fps = _fps(cap.get(cv2.CAP_PROP_FPS)) or self.cfg.fps or DEFAULT_FPS

    def open(self) -> None:
        self.close()
        try:
            with opencv_quiet():  # a failure is our one line below, naming the camera
                cap = self._create()
        except cv2.error as e:
            raise CaptureError(f"{self.where}: cannot open ({' '.join(str(e).split())})") from None
        if not cap.isOpened():
            cap.release()
            raise self._open_failed()
        self._cap = cap
        self._configure(cap)
        self._scaled_decode(cap)

    # --- MJPG decoded at a reduced size -------------------------------------------------------------
    def _raw_mode(self, cap: Any) -> bool:
        """Ask the capture for the encoded packets instead of decoded frames."""
        return False

    def _scaled_decode(self, cap: Any) -> None:
        """With an MJPG stream whose frames are bigger than needed: decode them here, in the JPEG
        decoder's DCT domain at 1/2, 1/4 or 1/8 (``camera.decode_scale``), instead of in full."""
        self.scale, self._flag = 1, cv2.IMREAD_COLOR
        fourcc = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        setting = self.cfg.decode_scale
        if fourcc not in _MJPEG:
            if setting not in ("auto", 1) and not self._told:
                logger.warning("%s: decode_scale %s applies to MJPG only; this source is %s: decoded in full",
                               self.where, setting, fourcc)
                self._told = True
            return
        scale = pick_scale(setting, size, self.need)
        if scale == 1:
            return
        sw, sh = -(-size[0] // scale), -(-size[1] // scale)
        if setting != "auto" and not self._told and (sw < self.need[0] or sh < self.need[1]
                                                     or min(sw, sh) < self.need[2]):
            logger.warning("%s: decode_scale %d gives %dx%d frames, smaller than needed for the model's "
                           "input and the clips (%s): they are scaled up", self.where, scale, sw, sh,
                           _need_text(self.need))
        if not self._raw_mode(cap):
            logger.info("%s: this capture does not hand over MJPG packets: decoded in full", self.where)
            return
        self.scale, self._flag = scale, REDUCED_FLAGS[scale]
        log = logger.debug if self._told else logger.info
        log("%s: MJPG %dx%d decoded at 1/%d (%dx%d) in the JPEG decoder", self.where, size[0], size[1], scale,
            sw, sh)
        self._told = True

    def _image(self) -> np.ndarray | None:
        """The next frame (decoded here in scaled mode), or None when the capture has none."""
        for _ in range(_BAD_PACKETS):
            ok, img = self._cap.read()
            if not ok or img is None:
                return None
            if self.scale == 1 or img.ndim == 3:  # a driver that decoded anyway
                return _bgr(img)
            out = cv2.imdecode(img, self._flag) if img.size else None
            if out is not None:
                return out
            self._bad += 1
            if self._bad in (1, 10, 100) or self._bad % 1000 == 0:
                logger.warning("%s: %d undecodable MJPG frame(s) so far (skipped)", self.where, self._bad)
        return None

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise CaptureError(f"{self.where}: read while not open")
        img = self._image()
        if img is None:
            return self._read_failed()
        return img

    def skip(self) -> bool:
        """grab() without retrieve(): the frame is taken off the device or demuxed but not converted."""
        if self._cap is None:
            raise CaptureError(f"{self.where}: read while not open")
        if not self._cap.grab():
            return self._read_failed() is not None
        return True

    def _read_failed(self) -> np.ndarray | None:
        raise CaptureError(f"{self.where}: read failed")

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._drop_fd()


def _need_text(need: tuple[int, int, int]) -> str:
    parts = [f"width {need[0]}" if need[0] else "", f"height {need[1]}" if need[1] else "",
             f"short side {need[2]}" if need[2] else ""]
    return "at least " + ", ".join(p for p in parts if p)


class V4L2Source(OpenCVSource):
    """A V4L2 device by index (0) or path (/dev/video0, /dev/v4l/by-id/...)."""

    kind = "v4l2"
    api = cv2.CAP_V4L2

    def __init__(self, cfg: CameraConfig, target: str | int, capture_factory: CaptureFactory | None = None) -> None:
        super().__init__(cfg, target, capture_factory)
        self.device = f"/dev/video{target}" if isinstance(target, int) else str(target)
        self.label = self.device

    def _open_failed(self) -> Exception:
        if not os.path.exists(self.device):
            why = "no such device"
        elif not os.access(self.device, os.R_OK | os.W_OK):
            why = "permission denied; is the user in the 'video' group?"
        else:
            why = "busy, or not a V4L2 capture device"
        return CaptureError(f"{self.where}: cannot open ({why})")

    def away(self) -> bool:
        """The device node does not exist (yet): a USB camera that udev has not made at boot."""
        return absent(self.device)

    def _configure(self, cap: Any) -> None:
        """FOURCC first (it limits the sizes), then size, then rate; log what the driver accepted."""
        cfg = self.cfg
        if cfg.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc, fps = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)), _fps(cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps or cfg.fps or DEFAULT_FPS
        rate = f"{fps:.3g} fps" if fps else "? fps"
        logger.info("camera %s: %s %dx%d %s %s", self.name, self.device, width, height, fourcc, rate)
        differ = []
        if (cfg.width or width, cfg.height or height) != (width, height):
            differ.append(f"size {cfg.width or width}x{cfg.height or height} (got {width}x{height})")
        if cfg.fourcc and cfg.fourcc != fourcc:
            differ.append(f"format {cfg.fourcc} (got {fourcc})")
        if cfg.fps and (not fps or abs(fps - cfg.fps) > 0.01 * cfg.fps):
            differ.append(f"rate {cfg.fps:.3g} fps (got {rate})")
        if differ:
            logger.warning("camera %s: %s: the driver did not accept %s", self.name, self.device, ", ".join(differ))

    def _raw_mode(self, cap: Any) -> bool:
        """OpenCV's V4L2 backend hands over the driver's MJPG buffer when it does not convert to BGR."""
        return bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))


class FileSource(OpenCVSource):
    """A video file: lossless at decode speed, or paced at its own fps with ``realtime: true``."""

    kind = "file"
    api = cv2.CAP_FFMPEG if backends()["FFMPEG"] else cv2.CAP_ANY

    def __init__(self, cfg: CameraConfig, target: str | int, capture_factory: CaptureFactory | None = None) -> None:
        super().__init__(cfg, str(target), capture_factory)
        self.live = self.paced = cfg.realtime
        self._peek: np.ndarray | None = None
        self._count = self._n = 0
        self._announced = self._warned = False

    def _create(self) -> Any:
        return self.capture_factory(self._library_name(), self.api)

    def open(self) -> None:
        """Open and decode the first frame, so a broken file fails here and not mid-run.

        Raises:
            InputError: missing, unreadable, or not a video OpenCV can decode (exit 66).
        """
        path = Path(self.target)
        why = usable_name(path) or probe(Path.exists, path)
        if why is not None:
            raise InputError(f"camera {self.name}: {show_path(path)}: cannot be read ({why})")
        if not path.exists():
            raise InputError(f"{self.where}: no such file")
        if path.is_dir():
            raise InputError(f"{self.where}: is a directory, expected a video file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{self.where}: permission denied")
        super().open()
        img = self._image()
        if img is None:
            self.close()
            raise InputError(f"{self.where}: no frame could be decoded (a damaged or unsupported video)")
        self._peek, self._n = img, 0
        self._count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        log = logger.debug if self._announced else logger.info
        log("camera %s: %s %dx%d %.3g fps, %d frames%s", self.name, path.name, img.shape[1], img.shape[0],
            self.fps, self._count, ", paced (realtime)" if self.paced else "")
        self._announced = True

    @property
    def frame_count(self) -> int:
        """The file's frame count as its container states it (0: not stated); valid after open()."""
        return self._count

    def _open_failed(self) -> Exception:
        return InputError(f"{self.where}: cannot be opened (not a video OpenCV can decode)")

    def away(self) -> bool:
        """Nothing at the path (yet): a file still to be copied in, a stick not mounted yet."""
        return absent(self.target)

    def _raw_mode(self, cap: Any) -> bool:
        """FFmpeg's demuxed packets (CAP_PROP_FORMAT -1): for MJPG, one JPEG per frame."""
        return self.api == cv2.CAP_FFMPEG and bool(cap.set(cv2.CAP_PROP_FORMAT, -1))

    def read(self) -> np.ndarray | None:
        if self._peek is not None:
            img, self._peek = self._peek, None
        else:
            img = super().read()
        if img is not None:
            self._n += 1
        return img

    def skip(self) -> bool:
        if self._peek is not None:
            self._peek = None
            ok = True
        else:
            ok = super().skip()
        if ok:
            self._n += 1
        return ok

    def _read_failed(self) -> np.ndarray | None:
        """End of the file; early (a truncated or corrupt tail) ends the same way, with a warning."""
        if self._count and self._n < self._count - 1 - self._count // 100 and not self._warned:
            logger.warning("%s: decoding stopped at frame %d of %d (truncated or damaged file); ending there",
                           self.where, self._n, self._count)
            self._warned = True
        return None

    def close(self) -> None:
        self._peek = None
        super().close()


def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/`` -> ``rtsp://user:***@host/`` for logs and messages."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url, flags=re.I)


class UrlSource(OpenCVSource):
    """An RTSP/HTTP stream through FFmpeg; a read that gives nothing for ``stall_s`` fails."""

    kind = "url"
    api = cv2.CAP_FFMPEG if backends()["FFMPEG"] else cv2.CAP_ANY

    def __init__(self, cfg: CameraConfig, target: str | int, capture_factory: CaptureFactory | None = None) -> None:
        super().__init__(cfg, str(target), capture_factory)
        self.label = redact_url(str(target))

    def _create(self) -> Any:
        ms = int(self.cfg.stall_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(ms, 10_000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return self.capture_factory(self.target, self.api, params)

    def _open_failed(self) -> Exception:
        return CaptureError(f"{self.where}: cannot open (unreachable, refused, or not a stream FFmpeg can read)")

    def _read_failed(self) -> np.ndarray | None:
        raise CaptureError(f"{self.where}: read failed (stream ended, dropped or timed out)")


class GStreamerSource(OpenCVSource):
    """A GStreamer pipeline ending in ``appsink`` (e.g. a Jetson CSI camera via nvarguscamerasrc)."""

    kind = "gstreamer"
    api = cv2.CAP_GSTREAMER

    def __init__(self, cfg: CameraConfig, target: str | int, capture_factory: CaptureFactory | None = None) -> None:
        super().__init__(cfg, str(target), capture_factory)
        text = " ".join(str(target).split())
        self.label = "gst: " + (text if len(text) <= 60 else text[:57] + "...")

    def open(self) -> None:
        """Check that this OpenCV has GStreamer (it is a build option), then start the pipeline.

        Raises:
            CaptureError: no GStreamer in this OpenCV, or the pipeline does not start.
        """
        if not backends()["GStreamer"]:
            raise CaptureError(
                f"camera {self.name}: a GStreamer pipeline needs OpenCV built with GStreamer, and this one "
                f"({cv2.__version__}) is not; install an OpenCV with GStreamer (on Jetson: the JetPack OpenCV, "
                f"and 'pip uninstall opencv-python-headless' so that one is imported)")
        super().open()

    def away(self) -> bool:
        """A pipeline that does not start may start later (a CSI camera's daemon still coming up); an OpenCV
        without GStreamer never will."""
        return backends()["GStreamer"]

    def _open_failed(self) -> Exception:
        hint = "" if "appsink" in str(self.target) else "; the pipeline must end in 'appsink'"
        return CaptureError(f"{self.where}: cannot start the pipeline (run it with gst-launch-1.0 to see why{hint})")
