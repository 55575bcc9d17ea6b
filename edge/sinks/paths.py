"""One-line messages about paths that a sink cannot use (a log file, a socket, a file the config names).

A path from a config can be anything: 5000 characters, a NUL byte (Python raises ValueError before the
OS is asked), characters that cannot be encoded as a file name, a folder without write permission, a
file where a folder should be. :func:`path_error` says why and what to do; :func:`show_path` prints the
path itself on one line.
"""
from __future__ import annotations

import errno
import re
from pathlib import Path

_NAME_MAX, _PATH_MAX = 255, 4095  # Linux: bytes in one file name, in a whole path


def cause(e: BaseException) -> str:
    """An OS or driver error as a short one-line cause (``No such file or directory``)."""
    if isinstance(e, OSError) and isinstance(e.errno, int) and e.strerror and "[Errno" not in e.strerror:
        return e.strerror
    text = " ".join(str(e).split())
    found = re.findall(r"\[Errno \d+\] ([^:]+)", text)  # pyserial: "write failed: [Errno 5] Input/output error"
    return found[-1].strip() if found else text or type(e).__name__


def show_path(path: str | Path, limit: int = 300) -> str:
    """A path fit for a one-line message: unprintable characters (a newline, NUL, a lone surrogate from
    undecodable bytes) escaped, a very long one shortened to its ends and its length."""
    text = str(path)
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return out if len(out) <= limit else f"{out[:limit - 100]}...{out[-60:]} ({len(text)} characters)"


def path_error(e: BaseException, path: str | Path) -> str:
    """Why ``path`` cannot be opened or created, and what to do, in a few words (for a SinkError line).

    ``e``: the OSError, or the ValueError Python raises before asking the OS (a NUL byte, characters that
    cannot be encoded as a file name)."""
    if isinstance(e, ValueError):
        if "\x00" in str(path):
            return "the path contains a NUL byte; remove it from the config"
        return "the path cannot be encoded as a file name (invalid characters); use another path"
    n, why = getattr(e, "errno", None), cause(e)
    if n == errno.ENAMETOOLONG:
        return f"{why} (at most {_NAME_MAX} bytes per name, {_PATH_MAX} in all); choose a shorter path"
    if n in (errno.EACCES, errno.EPERM):
        return f"{why}; let the service user write there (under systemd: ReadWritePaths= in a drop-in) or " \
               f"choose a path under its state or runtime folder"
    if n == errno.EROFS:
        return f"{why}; choose a path on a writable file system (under systemd: ReadWritePaths=)"
    if n in (errno.ENOTDIR, errno.EEXIST):  # mkdir says EEXIST where a file stands in for a folder
        blocker = blocking_file(path)
        if blocker is not None:
            return f"{show_path(blocker)} is not a folder; choose another path"
    if n == errno.EISDIR:
        return "is a directory; give the path of a file"
    if n == errno.ELOOP:
        return f"{why} (a symlink loop?)"
    return why


def blocking_file(path: str | Path) -> Path | None:
    """The file (not a folder) that stands where ``path`` or one of its folders should be, if any."""
    return next((p for p in (Path(path), *Path(path).parents) if _is_file(p)), None)


def _is_file(p: Path) -> bool:
    try:
        return p.exists() and not p.is_dir()
    except (OSError, ValueError):
        return False


