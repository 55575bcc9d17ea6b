"""Error types of edge-tsm, each mapped to a sysexits code for the command line."""
from __future__ import annotations

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
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


class StateError(EdgeError):
    """A file in the state folder is damaged or not what it should be (a status.json of the wrong shape,
    a lock file that is a symbolic link); what the daemon can repair it repairs, with a warning."""

    exit_code = EX_DATAERR


class BusyError(EdgeError):
    """Another process holds what this one needs (the state folder's lock): try again when it has stopped."""

    exit_code = EX_TEMPFAIL


class DeviceError(EdgeError):
    """A device (engine device, camera, serial port, GPIO chip) is not available."""

    exit_code = EX_UNAVAILABLE


class CaptureError(DeviceError):
    """A frame source cannot be opened or read."""


class SinkError(DeviceError):
    """An event sink cannot be opened or written."""


class PackageMissing(DeviceError):
    """A Python package this command or configuration needs is not installed (exit 69, like a missing
    device); the one line names the package and the pip command that installs it."""


class SinkPackageMissing(PackageMissing, SinkError):
    """A sink's package is not installed (still a SinkError for the sink's own handling)."""


class CapturePackageMissing(PackageMissing, CaptureError):
    """A frame source's package is not installed (still a CaptureError)."""


def package_missing(base: type[EdgeError]) -> type[PackageMissing]:
    """The PackageMissing class to raise where ``base`` would be raised for any other failure."""
    return {SinkError: SinkPackageMissing, CaptureError: CapturePackageMissing}.get(base, PackageMissing)


class NoPermission(EdgeError):
    """This user may not write what the command must write (``install-service`` not run as root), or the
    service's user could not reach a file it needs (an installation under /root)."""

    exit_code = EX_NOPERM
