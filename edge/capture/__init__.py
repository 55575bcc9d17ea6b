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

__all__ = ["SOURCES", "Camera", "Frame", "Source", "create_source"]

SourceFactory = Callable[[CameraConfig, "str | int"], Source]


def _opencv(cfg: CameraConfig) -> ModuleType:
    try:
        from edge.capture import opencv
    except ImportError as e:
        raise CaptureError(f"camera {cfg.name}: needs OpenCV ({e}): pip install opencv-python-headless "
                           f"(on Jetson: the JetPack OpenCV)") from None
    return opencv


def _v4l2(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg).V4L2Source(cfg, target)


def _file(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg).FileSource(cfg, target)


def _url(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg).UrlSource(cfg, target)


def _gstreamer(cfg: CameraConfig, target: str | int) -> Source:
    return _opencv(cfg).GStreamerSource(cfg, target)


def _synthetic(cfg: CameraConfig, target: str | int) -> Source:
    try:
        from edge.capture.synthetic import SyntheticSource
    except ImportError as e:
        raise CaptureError(f"camera {cfg.name}: the synthetic source needs edge.models.synth ({e}); "
                           f"reinstall edge-tsm") from None
    return SyntheticSource(cfg, target)


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
