"""Error types of edge-tsm, each mapped to a sysexits code for the command line."""
from __future__ import annotations

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78


class EdgeError(Exception):
    """Base of every error edge-tsm reports to a user as one line."""

    exit_code = EX_SOFTWARE


class UsageError(EdgeError):
    """A command-line argument is wrong."""

    exit_code = EX_USAGE


class ConfigError(EdgeError):
    """The configuration (file, key or value) is invalid."""

    exit_code = EX_CONFIG


class InputError(EdgeError):
    """An input file or folder is missing or unreadable."""

    exit_code = EX_NOINPUT


class ModelError(EdgeError):
    """A model bundle, graph or checkpoint is missing, broken or inconsistent."""

    exit_code = EX_DATAERR


class DataError(EdgeError):
    """A dataset is malformed (no clips, unknown labels, unreadable videos)."""

    exit_code = EX_DATAERR


class DeviceError(EdgeError):
    """A device (engine device, camera, serial port, GPIO chip) is not available."""

    exit_code = EX_UNAVAILABLE


class CaptureError(DeviceError):
    """A frame source cannot be opened or read."""


class SinkError(DeviceError):
    """An event sink cannot be opened or written."""
