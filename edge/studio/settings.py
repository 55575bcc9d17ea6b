"""What one studio server serves: its folders (the roots of every path in the API), model, config, token.

A file is named in the API by one string ``ROOT/REL`` (``spool/door/x.avi``); :meth:`StudioSettings.resolve`
turns it into a path and refuses anything that is not a file under that root's folder once symbolic
links are followed (``..``, absolute paths, links out), with the same 404 as for a missing file.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOTS = ("data", "spool", "recordings", "work")
FLAGS = {"data": "--data", "spool": "--spool", "recordings": "--recordings", "work": "--work"}


class StudioError(Exception):
    """One line for the page (JSON ``{"error": ...}``) with an HTTP status and, for 409, the current state."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass
class StudioSettings:
    """The server's folders and choices; ``folders`` maps a root name to its folder (absent: not served)."""

    folders: dict[str, Path]
    model: str = "default"
    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    cache_dir: Path | None = None       # scores cache (default: the engines' cache folder + /studio)
    engine: dict[str, Any] = field(default_factory=lambda: {"type": "onnxruntime", "device": "CPU"})
    max_body: int = 1 << 20

    def __post_init__(self) -> None:
        self.folders = {k: Path(v).resolve() for k, v in self.folders.items() if v is not None}
        unknown = set(self.folders) - set(ROOTS)
        if unknown:
            raise ValueError(f"unknown roots {sorted(unknown)}")

    @property
    def loopback(self) -> bool:
        from edge.config import is_loopback
        return is_loopback(self.host)

    def folder(self, root: str) -> Path:
        """The folder of ``root``; 404 naming the flag when the server was not given one."""
        if root not in self.folders:
            flag = FLAGS.get(root)
            raise StudioError(404, f"no {root} folder: start the studio with {flag} DIR" if flag else
                              f"unknown root {root!r} (roots: {', '.join(ROOTS)})")
        return self.folders[root]

    def resolve(self, ref: Any, *, kind: str = "file", what: str = "path") -> Path:
        """``ROOT/REL`` -> the path under that root (``kind``: ``file`` must be a file, ``dir`` a folder,
        ``new`` need not exist but its parent must be inside the root).

        Raises:
            StudioError: 404: not a string of that form, outside the root (after links), or not there.
        """
        if not isinstance(ref, str) or not ref or len(ref) > 4096 or "\x00" in ref or "\\" in ref:
            raise StudioError(404, f"{what} {str(ref)[:200]!r}: expected ROOT/PATH with ROOT one of "
                                   f"{', '.join(r for r in ROOTS if r in self.folders)}")
        root, _, rel = ref.partition("/")
        folder = self.folder(root)
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts):
            raise StudioError(404, f"{what} {ref!r}: not a file under the {root} folder")
        path = folder.joinpath(*parts)
        real = path.resolve()
        if not real.is_relative_to(folder) or (kind == "new" and not real.parent.is_relative_to(folder)):
            raise StudioError(404, f"{what} {ref!r}: not a file under the {root} folder")
        ok = {"file": real.is_file, "dir": real.is_dir, "new": lambda: not real.is_dir()}[kind]()
        if not ok:
            raise StudioError(404, f"{what} {ref!r}: not a {'folder' if kind == 'dir' else 'file'} under the "
                                   f"{root} folder")
        return path

    def api_path(self, path: str | Path, root: str | None = None) -> str | None:
        """The API name (``ROOT/REL``) of a file under one of the folders (``root``: that one only)."""
        p = Path(path).absolute()
        for name in ([root] if root else ROOTS):
            folder = self.folders.get(name)
            if folder is not None and p.is_relative_to(folder):
                return f"{name}/{p.relative_to(folder).as_posix()}"
        return None
