"""The cache folder: files derived from a model (the batched graph, OpenVINO's compiled blobs, TensorRT
engines) that the engines load instead of the bundle's own graph.

Whoever can write there decides what the engines run, so the folder must be this user's alone: the
config's ``engine.cache_dir``, else systemd's ``CacheDirectory=`` (``$CACHE_DIRECTORY``), else
``$XDG_CACHE_HOME/edge-tsm``, else ``~/.cache/edge-tsm``; created 0700, and refused (one line) when it is
owned by another user or writable by its group or by others. Never the shared temporary folder, where
anyone can plant a file (or a symlink at a temporary name) under a name that is easy to guess.

Files in it are written with :func:`edge.util.atomic_write` (O_EXCL|O_NOFOLLOW temporary files, then a
rename) and read with :func:`read_private` (O_NOFOLLOW, regular files only); :func:`edge.batching` keeps a
SHA-256 beside each derived graph and rebuilds a graph that does not match it.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import stat
from pathlib import Path

from edge.errors import InputError
from edge.paths import default_folder, path_error, show_path
from edge.util import atomic_write


def cache_folder(configured: str | Path | None = None) -> tuple[Path, str]:
    """The cache folder and how a message names it: ``engine.cache_dir``, ``$CACHE_DIRECTORY``,
    ``$XDG_CACHE_HOME/edge-tsm`` or ``~/.cache/edge-tsm`` (nothing is created here).

    Raises:
        InputError: no folder can be named (no configured one, not under systemd, no home folder).
    """
    if configured:
        return Path(configured), "engine.cache_dir"
    found = default_folder("CACHE_DIRECTORY", "XDG_CACHE_HOME", ".cache")
    if found is None:
        raise InputError("cache folder: no engine.cache_dir, no $CACHE_DIRECTORY and no home folder to keep "
                         "~/.cache/edge-tsm in; set engine.cache_dir")
    folder, kind = found
    return folder, {"systemd": "$CACHE_DIRECTORY", "xdg": "$XDG_CACHE_HOME/edge-tsm", "home": "~/.cache/edge-tsm"}[kind]


def label(folder: str | Path) -> str:
    """How a message names ``folder``, a cache folder the engines were given (the config's or systemd's)."""
    env = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return "$CACHE_DIRECTORY" if env and Path(env) == Path(folder) else "engine.cache_dir"


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def private_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder only this user can write: created 0700 when missing (its parents as the umask
    says), else checked.

    Raises:
        InputError: ``<what> <path>: ...`` (exit 66): it cannot be created, is not a folder, is owned by
            another user, or its group or others may write in it; the line says what to do.
    """
    folder = Path(path)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(folder)
    except (OSError, ValueError) as e:
        raise InputError(f"{what} {show_path(folder)}: cannot create or use ({path_error(e, folder)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {show_path(folder)}: not a folder; choose another path")
    me = os.geteuid()
    if st.st_uid != me:
        raise InputError(f"{what} {show_path(folder)}: refused: owned by {_user(st.st_uid)}, not by this user "
                         f"({_user(me)}), who could plant graphs the engines would run; use a folder of this "
                         f"user's (e.g. remove this one and let edge-tsm create it, mode 0700)")
    if st.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if st.st_mode & bit)
        raise InputError(f"{what} {show_path(folder)}: refused: writable by {who} (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}), who could plant graphs the engines would run; "
                         f"chmod 700 it or choose another folder")
    return folder


def read_private(path: Path, limit: int = 1 << 31) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (not a symlink, FIFO or device) of at most ``limit``
    bytes; None otherwise (missing included)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:  # read(n) allocates n bytes first: ask for the size, not the limit
            data = f.read(st.st_size + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checked(path: Path, data: bytes) -> None:
    """Write ``path`` and, beside it, ``<name>.sha256`` (``sha256sum`` format) holding its hash.

    Raises:
        OSError: the folder cannot be written.
    """
    atomic_write(path, data, mode=0o600)
    atomic_write(path.with_name(path.name + ".sha256"), f"{sha256(data)}  {path.name}\n", mode=0o600)


def verified(path: Path) -> tuple[bool, str]:
    """(True, "") when ``path`` is a regular file whose SHA-256 is the one recorded beside it by
    :func:`write_checked`; else (False, why) (nothing there: ``why`` is empty)."""
    data = read_private(path)
    if data is None:
        return False, ("not a regular file" if os.path.lexists(path) else "")
    recorded = read_private(path.with_name(path.name + ".sha256"), limit=4096)
    if recorded is None:
        return False, "no hash recorded beside it"
    fields = recorded.decode("ascii", "replace").split()
    if len(fields) != 2 or fields[1] != path.name:
        return False, "the hash file beside it is malformed"
    if fields[0] != sha256(data):
        return False, "its content does not match the hash recorded beside it"
    return True, ""
