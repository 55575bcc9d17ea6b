"""One-line messages about paths from a config that cannot be used (a log file, a socket, a model file,
a camera file, a cache or state folder).

A path from a config can be anything: 5000 characters, a NUL byte (Python raises ValueError before the
OS is asked), characters that cannot be encoded as a file name, a folder without write permission, a
file where a folder should be. :func:`path_error` says why and what to do; :func:`show_path` prints the
path itself on one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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




def usable_name(path: str | Path) -> str | None:
    """Why ``path`` cannot name a file at all (a NUL byte), or None. Names with bytes that are not UTF-8
    are fine: :func:`library_path` hands them to the C++ libraries."""
    if "\x00" in str(path):
        return "the path contains a NUL byte; remove it from the config"
    return None


def probe(check: Any, path: str | Path) -> str | None:
    """Run ``check(path)`` (e.g. ``Path.is_file``); None when it worked, else why it failed (an over-long
    name, a NUL byte, a folder that is a file...) in the words of :func:`path_error`."""
    try:
        check(Path(path))
        return None
    except (OSError, ValueError) as e:
        return path_error(e, path)


def writable_folder(path: str | Path, what: str) -> Path:
    """Create ``path`` (a folder) if needed and prove a file can be written in it.

    Raises:
        InputError: ``<what> <path>: <why, what to do>`` (exit 66).
    """
    from edge.errors import InputError
    folder = Path(path)
    why = usable_name(folder)
    if why is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe_file = folder / f".probe-{os.getpid()}"
            fd = os.open(probe_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.close(fd)
            probe_file.unlink()
            return folder
        except (OSError, ValueError) as e:
            why = path_error(e, folder)
    raise InputError(f"{what} {show_path(folder)}: cannot create or write ({why})")


def writable_file(path: str | Path, what: str) -> Path:
    """A file the daemon will write (replace) later, from Python (so any name the OS takes will do): its
    folder must exist and be writable, and it must not be a folder itself. Nothing is created.

    Raises:
        InputError: ``<what> <path>: <why, what to do>`` (exit 66).
    """
    from edge.errors import InputError
    target = Path(path)
    why = "the path contains a NUL byte; remove it from the config" if "\x00" in str(target) else None
    if why is None:
        try:
            if target.is_dir():
                why = "is a directory; give the path of a file"
            elif not target.parent.is_dir():
                blocker = blocking_file(target.parent)
                why = f"{show_path(blocker)} is not a folder" if blocker else "its folder does not exist"
            elif not os.access(target.parent, os.W_OK):
                why = "its folder is not writable for this user"
            else:
                target.exists()  # an over-long name fails here (ENAMETOOLONG), not at the first write
        except (OSError, ValueError) as e:
            why = path_error(e, target)
    if why is not None:
        raise InputError(f"{what} {show_path(target)}: cannot write ({why})")
    return target


@contextlib.contextmanager
def library_path(path: str | Path) -> Iterator[str]:
    """A name for ``path`` that C++ libraries taking UTF-8 text (OpenCV, ONNX Runtime, OpenVINO) can open.

    Most names are passed as they are. A name with bytes that are not UTF-8 (legal on Linux; Python holds
    them as lone surrogates, which crash OpenCV and are refused by the engines) is opened here and given
    as ``/proc/self/fd/N`` while the block runs.

    Raises:
        OSError: the file cannot be opened.
    """
    text = str(path)
    if "\\udc" not in ascii(text):
        yield text
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def default_folder(systemd_env: str, xdg_env: str, home_rel: str) -> tuple[Path, str] | None:
    """The folder systemd gives (``$<systemd_env>``, its first entry), else ``$<xdg_env>/edge-tsm`` (an absolute
    value only, as the XDG spec says), else ``~/<home_rel>/edge-tsm``; with which one it was ('systemd', 'xdg',
    'home'). None when there is no home folder either. The state and the cache folder are both found so."""
    systemd = os.environ.get(systemd_env, "").split(":")[0]
    if systemd:
        return Path(systemd), "systemd"
    xdg = os.environ.get(xdg_env, "")
    if os.path.isabs(xdg):
        return Path(xdg) / "edge-tsm", "xdg"
    home = os.environ.get("HOME", "")
    if not home:
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            home = ""
    return (Path(home) / home_rel / "edge-tsm", "home") if home else None
