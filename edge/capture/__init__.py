"""Frame capture: one Source per camera kind, run by a :class:`Camera` in its own thread.

``SOURCES`` maps a camera's kind (from :func:`edge.config.normalise_camera_source`) to a factory;
each factory imports its module when called, so a missing dependency is one clear error naming
what to install. Adding a kind is one file and one line here.
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from edge.capture.base import Camera, Frame, Source
from edge.config import CameraConfig, normalise_camera_source
from edge.errors import CaptureError, ConfigError
from edge.util import lazy_import

__all__ = ["SOURCES", "Camera", "Frame", "Source", "create_source"]

SourceFactory = Callable[[CameraConfig, "str | int"], Source]


def _opencv(cfg: CameraConfig, kind: str) -> ModuleType:
    return lazy_import("edge.capture.opencv", what=f"camera {cfg.name}: a {kind} source",
                       package="opencv-python-headless",
                       install="pip install opencv-python-headless (on Jetson: the JetPack OpenCV)",
                       error=CaptureError, missing=("cv2",))


def _v4l2(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg, "v4l2").V4L2Source(cfg, target)


def _file(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg, "file").FileSource(cfg, target)


def _url(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg, "url").UrlSource(cfg, target)


def _gstreamer(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg, "gstreamer").GStreamerSource(cfg, target)


def _synthetic(cfg: CameraConfig, target: str | int) -> Source:
    mod = lazy_import("edge.capture.synthetic", what=f"camera {cfg.name}: a synthetic source",
                      package="opencv-python-headless", install="pip install opencv-python-headless",
                      error=CaptureError, missing=("cv2",))
    return mod.SyntheticSource(cfg, target)


SOURCES: dict[str, SourceFactory] = {
    "v4l2": _v4l2,
    "file": _file,
    "url": _url,
    "gstreamer": _gstreamer,
    "synthetic": _synthetic,
}


def create_source(cfg: CameraConfig) -> Source:
    """The Source for a camera's config (not opened yet).

    Raises:
        ConfigError: a kind with no source here.
        CaptureError: the source's dependency is missing, or its target is invalid (synthetic label).
    """
    kind, target = normalise_camera_source(cfg)
    factory = SOURCES.get(kind)
    if factory is None:
        raise ConfigError(f"cameras: {cfg.name}: no source for type {kind!r} (known: {', '.join(SOURCES)})")
    return factory(cfg, target)
