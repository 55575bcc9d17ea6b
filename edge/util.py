"""Small helpers every part of the runtime shares: lazy imports, atomic writes, backoff, rate limits.

Each used to be written where it was needed (six atomic writes, three backoffs, two rate limits); one
copy here means one behaviour to test and to fix.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from edge.errors import EdgeError, package_missing


def lazy_import(module: str, *, what: str, package: str, install: str,
                error: type[EdgeError] = EdgeError, missing: tuple[str, ...] = ()) -> ModuleType:
    """Import ``module`` when a registry entry is used; an ImportError becomes one line saying what to install.

    ``what``: the thing that needs it (``sink mqtt: type 'mqtt'``); ``package``: the distribution a user
    installs (``paho-mqtt``); ``install``: the command (``pip install 'edge-tsm[mqtt]'``). ``missing``:
    import names whose absence means the package is simply not installed (default: the top-level name of
    ``package``); any other failing import is quoted, since the package is there but broken.

    Raises:
        error: ``<what> needs the <package> package: <install>[ (importing it failed: ...)]``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        absent = missing or (package.replace("-", "_").split("[")[0], package.split("-")[0])
        detail = "" if e.name in absent else f" (importing it failed: {' '.join(str(e).split())})"
        cls = package_missing(error) if not detail else error  # absent: PackageMissing (exit 69)
        raise cls(f"{what} needs the {package} package: {install}{detail}") from None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | Path, data: str | bytes, *, mode: int | None = None, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` all at once: written to a hidden temporary file beside it, then renamed.

    A reader sees the old or the new content, never half of it; a crash leaves at most the temporary
    file. The temporary file is opened with O_EXCL|O_NOFOLLOW under a name with the pid, so a file or
    symlink planted at a predictable name is never written through. ``fsync``: the data reaches the disk
    before the rename (and the rename before return).

    Raises:
        OSError: the folder cannot be written (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600 if mode is None else mode)
    except FileExistsError:  # left by a crashed writer with our pid (or planted): remove, never follow
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600 if mode is None else mode)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if mode is not None:
                os.fchmod(fd, mode)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


class Backoff:
    """Exponential backoff with jitter: ``first`` s, doubling up to ``longest`` s, each delay drawn from
    [``low`` x delay, delay] so that many devices restarting together do not retry in step.

    ``next()`` returns the next delay and counts the attempt; ``reset()`` after a success.
    """

    def __init__(self, first: float, longest: float, *, low: float = 0.5, rng: random.Random | None = None) -> None:
        if not (0 < first <= longest) or not (0 <= low <= 1):
            raise ValueError(f"backoff: need 0 < first ({first}) <= longest ({longest}) and 0 <= low ({low}) <= 1")
        self.first, self.longest, self.low = float(first), float(longest), float(low)
        self.attempts = 0
        self._rng = rng or random.Random()

    def peek(self) -> float:
        """The largest delay the next attempt can get (no jitter, nothing counted)."""
        # min() on the exponent keeps 2**n finite for any attempt count and any finite ``first``
        return min(self.longest, self.first * 2.0 ** min(self.attempts, 60))

    def next(self) -> float:
        delay = self.peek()
        self.attempts += 1
        return self._rng.uniform(max(self.low * delay, min(self.first, delay)) if self.low else 0.0, delay)

    def reset(self) -> None:
        self.attempts = 0


class RateLimit:
    """Lets a repeated message through at most once per ``period`` seconds; counts what it held back.

    Give each kind of message its own RateLimit (one shared timer lets one failure silence another).
    """

    def __init__(self, period: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.suppressed = 0
        self._clock = clock
        self._next = -float("inf")

    def allow(self) -> bool:
        """True when the message may go out now (and starts a new period); False counts one suppressed."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.period
        return True

    def take_suppressed(self) -> int:
        """How many were held back since the last call (for ``... (N more since)``)."""
        n, self.suppressed = self.suppressed, 0
        return n

