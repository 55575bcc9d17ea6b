"""Log sink: events appended to a JSON-lines file.

The file is opened with O_APPEND and every line goes out in one ``os.write``, so lines stay whole
even when other processes append to the same file (and logrotate's copytruncate works). With
``fsync: true`` each line is synced to disk before it counts as delivered. A failed write (a full
disk, an I/O error) keeps the event: the file is reopened and the line retried with backoff, and
a line that was only partly written is finished, not written twice.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.errors import SinkError
from edge.paths import path_error, show_path
from edge.sinks.base import Sink, SinkConfigBase, json_line
from edge.sinks.feeds import JournalFeed

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class LogSinkConfig(SinkConfigBase):
    type: Literal["log"] = Field(description="events appended to a JSON-lines file")
    path: str = Field(description="JSON-lines file, appended to (one write per line); its folder is created")
    fsync: bool = Field(False, description="fsync after each line (survives a power cut, costs a disk write)")


class LogSink(Sink):
    """Events as JSON lines appended to ``cfg.path``."""

    type = "log"
    config = LogSinkConfig
    durable_default = True

    def __init__(self, cfg: LogSinkConfig, name: str) -> None:
        super().__init__(cfg, name)
        self.path = Path(cfg.path)
        self.target = f"file {show_path(self.path)}"
        self._fd: int | None = None
        self._rest: bytes | None = None  # what is still to write of the current event (b"": only the fsync)
        self._written_up_to: int | None = None  # journaled events up to this seq are in the file already
        self._torn = False                       # the file ends in a partial line

    def _details(self) -> str:
        return " (fsync each line)" if self.cfg.fsync else ""

    def _open_device(self) -> None:
        """Open the file for appending, creating it (and its folder) when missing.

        Raises:
            SinkError: the folder cannot be made or the file cannot be opened for appending: a path too
                long, with a NUL byte or unencodable characters, through a file, a directory, no write
                permission (exit 69); one line naming the sink, the path and what to do.
        """
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as e:
            folder = f" {show_path(parent)}" if len(str(parent)) <= 300 else ""  # else it is the path said above
            raise SinkError(f"{self.where}: cannot create its folder{folder}: {path_error(e, parent)}") from None
        try:
            self._fd = os.open(self.path, _FLAGS, 0o644)
        except (OSError, ValueError) as e:
            raise SinkError(f"{self.where}: cannot open for appending: {path_error(e, self.path)}") from None
        self._check_tail()

    def _check_tail(self) -> None:
        """After a crash or power cut: the seq the file already holds (a journaled event written just
        before the crash, whose cursor was not saved yet, is not written twice), and a torn last line
        (no newline: the next line starts on a line of its own)."""
        try:
            with open(self.path, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return  # a pipe or a device (/dev/stdout, /dev/full): nothing to read back
                f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
                tail = f.read(65536)
        except OSError:
            return
        if tail and not tail.endswith(b"\n"):
            self._torn = True
        lines = tail.rstrip(b"\n").split(b"\n") if tail.endswith(b"\n") else tail.split(b"\n")[:-1]
        for line in reversed(lines):
            try:
                seq = int(json.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(self._feed, JournalFeed) and seq <= self._feed.journal.last_seq:
                self._written_up_to = max(self._written_up_to or 0, seq)
            return

    def _write(self, event: dict[str, Any]) -> None:
        if self._fd is None:
            raise OSError(errno.EBADF, "file not open")
        if self._written_up_to is not None and int(event.get("seq", 0)) <= self._written_up_to:
            return  # already in the file (written before a crash, re-sent from the journal)
        data = json_line(event).encode() if self._rest is None else self._rest
        if self._torn and self._rest is None:
            data = b"\n" + data
        self._torn = False
        while data:
            n = os.write(self._fd, data)
            if n <= 0:  # never spin on a device that takes nothing
                raise OSError(errno.EIO, "write took no bytes")
            data = data[n:]
            self._rest = data  # partly written (full disk): finish this line on the retry
        self._rest = b""
        if self.cfg.fsync:
            try:
                os.fsync(self._fd)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: a pipe or device that cannot sync; nothing to wait for
                    raise
        self._rest = None

    def _close_device(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
