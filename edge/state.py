"""The state folder: where it is, one owner at a time, and its files read as untrusted input.

The state folder (config ``state_dir``, systemd's ``$STATE_DIRECTORY``, else a per-user default) holds the
journal (``journal/``), ``status.json``, the clip spool (``clips/``) and ``lock``. The daemon writes there
for months and anything can happen to it meanwhile (a power cut, a second daemon, a user's ``cp`` or
``mkfifo``, a planted symlink), so:

- **One owner:** :func:`lock_state_dir` takes an exclusive ``flock`` on ``<state>/lock`` (and writes its
  PID there) for as long as the journal is open; a second process is refused with one line naming the
  folder and the PID (:class:`edge.errors.BusyError`, exit 75). The lock file is never removed (removing a
  locked file lets a third process lock a new one); the kernel releases the lock when its holder dies.
- **No symlink followed, nothing but regular files opened:** files are opened with ``O_NOFOLLOW`` and
  ``O_NONBLOCK`` (a FIFO must not hang a start) and checked with ``fstat`` (:func:`open_regular`,
  :func:`read_regular`); files are written by :func:`edge.util.atomic_write` (an ``O_EXCL|O_NOFOLLOW``
  temporary file renamed over the name, which replaces a symlink rather than writing through it).
- **Damaged files are moved aside, not deleted:** :func:`quarantine` renames one to ``<name>.bad-<UTC time>``
  with a warning, so the daemon goes on and the bytes stay there for a person to look at.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import BusyError, ConfigError, InputError, StateError
from edge.paths import default_folder, show_path

if TYPE_CHECKING:
    from edge.config import Config

logger = logging.getLogger(__name__)

LOCK_FILE = "lock"
_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def shown(path: str | Path) -> str:
    """A path for a one-line message: non-printable characters escaped, an over-long one shortened."""
    return show_path(path, limit=200)


class NotRegular(OSError):
    """A name in the state folder is not a regular file (a directory, FIFO, socket, device or symlink)."""


def file_kind(mode: int) -> str:
    """What ``st_mode`` is, in words (``a FIFO``)."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str | Path, flags: int = os.O_RDONLY, mode: int = 0o640) -> int:
    """``os.open`` that follows no symlink, never blocks on a FIFO and returns only a regular file's fd.

    Raises:
        NotRegular: ``path`` is a symlink, directory, FIFO, socket or device (nothing was read or written).
        OSError: as ``os.open`` (FileNotFoundError, PermissionError...).
    """
    try:
        fd = os.open(path, flags | _FLAGS, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise NotRegular(errno.ELOOP, "a symbolic link (not followed)", str(path)) from None
        if e.errno in (errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP):  # a socket; a folder opened for writing
            try:
                kind = file_kind(os.lstat(path).st_mode)
            except OSError:
                raise e from None
            raise NotRegular(e.errno, kind, str(path)) from None
        raise
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegular(errno.EINVAL, file_kind(st.st_mode), str(path))
    return fd


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`), at most ``limit`` of them.

    Raises:
        NotRegular: not a regular file.
        OSError: cannot be read, or larger than ``limit`` (EFBIG).
    """
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise OSError(errno.EFBIG, f"{size} bytes, more than the {limit} such a file can have", str(path))
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # it grew while read
            raise OSError(errno.EFBIG, f"more than the {limit} bytes such a file can have", str(path))
        return data
    finally:
        os.close(fd)


def why(e: BaseException) -> str:
    """An OSError's reason in a few words (``a FIFO``, ``No such file or directory``)."""
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__


def quarantine(path: Path, reason: str) -> Path:
    """Move the damaged ``path`` aside to ``<name>.bad-<UTC time>`` (never over an existing name) and log
    one warning saying why; returns the new path.

    Raises:
        StateError: it cannot be renamed (one line: what is wrong and what to do).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        aside = path.with_name(f"{path.name}.bad-{stamp}" + (f"-{n}" if n else ""))
        if not os.path.lexists(aside):
            break
    try:
        os.rename(path, aside)
    except OSError as e:
        raise StateError(f"{shown(path)}: {reason}, and it cannot be moved aside ({why(e)}); "
                         "move it out of the state folder") from None
    logger.warning("%s: %s; moved aside to %s", shown(path), reason, aside.name)
    return aside


def ensure_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and prove a file can be written in it (a probe under a random name, created with
    O_EXCL|O_NOFOLLOW: a file or symlink planted at a predictable name is never written through).

    Raises:
        InputError: ``<what> <folder>: cannot create or write (<why>)`` for any OSError, and for a path
            the OS cannot take at all (a NUL byte, characters that are not valid in the file system's encoding).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except (OSError, ValueError) as e:
        raise InputError(f"{what} {shown(folder)}: cannot create or write ({why(e)})") from None


def locate_state_dir(configured: str | None) -> tuple[Path, str]:
    """(folder, where it comes from): the config's ``state_dir``, else systemd's ``$STATE_DIRECTORY``, else the
    per-user ``$XDG_STATE_HOME/edge-tsm``, else ``~/.local/state/edge-tsm``.

    Raises:
        ConfigError: none of them is set and the user has no home folder.
    """
    if configured:
        return Path(configured), "the config's state_dir"
    found = default_folder("STATE_DIRECTORY", "XDG_STATE_HOME", ".local/state")
    if found is None:
        raise ConfigError("state_dir: not set, and neither $STATE_DIRECTORY, $XDG_STATE_HOME nor a home folder "
                          "is there to default to; give state_dir a writable folder")
    folder, kind = found
    return folder, {"systemd": "systemd's StateDirectory ($STATE_DIRECTORY)",
                    "xdg": "the per-user default ($XDG_STATE_HOME/edge-tsm)",
                    "home": "the per-user default (~/.local/state/edge-tsm)"}[kind]


def state_dir(cfg: Config) -> Path:
    """Where the journal (and other state) lives; never None, see :func:`locate_state_dir`."""
    return locate_state_dir(cfg.state_dir)[0]


class StateLock:
    """An exclusive ``flock`` on ``<folder>/lock`` held by this process; :meth:`release` (or the process's
    end) lets the next one in. Take it with :func:`lock_state_dir`."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.path, self._fd = folder, folder / LOCK_FILE, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Clear the PID and unlock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor of the open file releases the flock


def holder(folder: Path) -> int | None:
    """The PID written in ``<folder>/lock`` (the process that holds or last held it), None if there is none."""
    try:
        text = read_regular(folder / LOCK_FILE, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 10 else None


def lock_state_dir(folder: Path) -> StateLock:
    """Take the state folder's lock (the folder must exist) and write this process's PID into it.

    Raises:
        BusyError: another process holds it: one line naming the folder and that process's PID (exit 75).
        StateError: the lock file is a symlink, FIFO, folder...: it is not followed or opened (exit 65).
        InputError: the lock file cannot be created or locked (exit 66).
    """
    path = folder / LOCK_FILE
    try:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o644)  # others may read the PID
    except NotRegular as e:
        raise StateError(f"state folder {shown(folder)}: its lock file {LOCK_FILE} is {e.strerror}, which is "
                         f"never followed or opened; remove it ({shown(path)})") from None
    except (OSError, ValueError) as e:
        raise InputError(f"state folder {shown(folder)}: cannot create its lock file {LOCK_FILE} ({why(e)})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        pid = _pid_in(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BusyError(f"state folder {shown(folder)} is in use by another edge-tsm "
                            f"({'PID ' + str(pid) if pid else 'PID not written yet'}): one process per state "
                            "folder; stop that one first, or give this one its own state_dir") from None
        raise InputError(f"state folder {shown(folder)}: cannot lock {LOCK_FILE} ({why(e)})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:  # a full disk: the lock holds all the same, only the PID is not there to show
        logger.warning("state folder %s: cannot write the PID into %s (%s)", shown(folder), LOCK_FILE, why(e))
    return StateLock(folder, fd)


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 10 else None
