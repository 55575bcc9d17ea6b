"""Log sink: events appended to a JSON-lines file.

The file is opened with O_APPEND and every line goes out in one ``os.write``, so lines stay whole
even when other processes append to the same file (and logrotate's copytruncate works). With
``fsync: true`` each line is synced to disk before it counts as delivered. A failed write (a full
disk, an I/O error) keeps the event: the file is reopened and the line retried with backoff, and
a line that was only partly written is finished, not written twice.

Before each line the sink checks that the path still names the file it holds open (one ``stat``). A
file deleted or replaced under it (``rm``, another file moved over it) is created again, logged and
counted (``reopened``), and what went to the lost file since the sink opened it is written again from
the journal (a durable sink; a memory-fed one says how many events were lost). A file moved away
(logrotate without copytruncate) is still whole where it went: the sink goes on in a new file at the
path, nothing rewritten. Copytruncate (same file, cut to zero) needs nothing: every write appends.

A path that is a symlink is refused (``O_NOFOLLOW``) unless ``follow_symlinks: true``, so a link
planted at the path cannot turn the events into a write to another file.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.errors import SinkError
from edge.paths import path_error, show_path
from edge.sinks.base import Rewound, Sink, SinkConfigBase, json_line
from edge.sinks.feeds import JournalFeed

logger = logging.getLogger(__name__)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class LogSinkConfig(SinkConfigBase):
    type: Literal["log"] = Field(description="events appended to a JSON-lines file")
    path: str = Field(description="JSON-lines file, appended to (one write per line); its folder is created")
    fsync: bool = Field(False, description="fsync after each line (survives a power cut, costs a disk write)")
    follow_symlinks: bool = Field(False, description="write through a symlink at `path` (default: a path that is a "
                                                     "symlink is refused, so a link planted there cannot redirect "
                                                     "the events into another file)")


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
        self._file: tuple[int, int] | None = None  # (device, inode) of the open file
        self._regular = False                    # a regular file (a device or pipe is not checked for loss)
        self._first: int | None = None           # the first seq written to the open file since it was opened
        self._written = 0                        # events written to it since
        self._reopened = 0                       # the file was found deleted, replaced or moved away
        self._old_fd: int | None = None          # the file let go after a failed write, kept open until the
                                                 # next open: was it deleted during the outage?

    def _details(self) -> str:
        return " (fsync each line)" if self.cfg.fsync else ""

    def _open_device(self) -> None:
        """Open the file for appending, creating it (and its folder) when missing.

        Raises:
            SinkError: the folder cannot be made or the file cannot be opened for appending: a path too
                long, with a NUL byte or unencodable characters, through a file, a directory, no write
                permission, a symlink without ``follow_symlinks`` (exit 69); one line naming the sink,
                the path and what to do.
        """
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as e:
            folder = f" {show_path(parent)}" if len(str(parent)) <= 300 else ""  # else it is the path said above
            raise SinkError(f"{self.where}: cannot create its folder{folder}: {path_error(e, parent)}") from None
        old, self._old_fd = self._old_fd, None
        if old is not None:
            self._let_go(old)
        flags = _FLAGS if self.cfg.follow_symlinks else _FLAGS | _NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o644)
        except (OSError, ValueError) as e:
            if isinstance(e, OSError) and e.errno == errno.ELOOP and self._is_link():
                raise SinkError(f"{self.where}: is a symlink; refused (set follow_symlinks: true on this sink to "
                                f"write through it)") from None
            raise SinkError(f"{self.where}: cannot open for appending: {path_error(e, self.path)}") from None
        st = os.fstat(fd)
        self._fd, file = fd, (st.st_dev, st.st_ino)
        if file != self._file:  # another file than the one held before (a first open, or after a loss)
            self._file, self._regular = file, stat.S_ISREG(st.st_mode)
            self._first, self._written = None, 0
            self._rest, self._written_up_to, self._torn = None, None, False
        self._check_tail()

    def _is_link(self) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(self.path).st_mode)
        except OSError:
            return False

    def _more_stats(self) -> dict[str, Any]:
        return {"reopened": self._reopened}

    def _check_tail(self) -> None:
        """After a crash or power cut: the seq the file already holds (a journaled event written just
        before the crash, whose cursor was not saved yet, is not written twice), and a torn last line
        (no newline: the next line starts on a line of its own)."""
        if not self._regular:
            return  # a pipe or a device (/dev/stdout, /dev/full): nothing to read back
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) |
                         (0 if self.cfg.follow_symlinks else _NOFOLLOW))
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_dev, st.st_ino) != self._file:
                    return  # replaced between the two opens: the next write notices
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
            except (ValueError, KeyError, TypeError, OverflowError):
                continue
            if isinstance(self._feed, JournalFeed) and seq <= self._feed.journal.last_seq:
                self._written_up_to = max(self._written_up_to or 0, seq)
            return

    def _write(self, event: dict[str, Any]) -> None:
        if self._fd is None:
            raise OSError(errno.EBADF, "file not open")
        if self._regular and not self._still_there():
            self._reopen()
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
        if self._first is None:
            self._first = int(event.get("seq", 0))
        self._written += 1

    def _idle(self) -> None:
        """No event for a while: a deleted or moved file is noticed now, not at the next event."""
        if self._fd is None or not self._regular or self._still_there():
            return
        try:
            self._reopen()
        except Rewound:
            pass  # the feed was moved back: the worker writes the lost events next
        except OSError as e:
            self._failed(e)

    def _still_there(self) -> bool:
        """The path still names the open file (one stat per line: cheap next to the write)."""
        try:
            st = os.stat(self.path) if self.cfg.follow_symlinks else os.lstat(self.path)
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True  # cannot tell (the folder went unreadable): the write itself will say
        return (st.st_dev, st.st_ino) == self._file

    def _reopen(self) -> None:
        """The file at the path was deleted, replaced or moved away: open (create) the path again.

        Raises:
            Rewound: a durable sink moved its feed back to the first event written to the lost file.
            OSError: the path cannot be opened now (the worker retries with backoff).
        """
        fd, self._fd = self._fd, None
        lost = self._let_go(fd) if fd is not None else ""
        if not lost:
            logger.warning("%s: the file was moved away (rotated?) while open; it is whole where it went, "
                           "writing to a new file at the path", self.where)
        with self._cond:
            self._reopened += 1
            self._cond.notify_all()
        try:
            self._open_device()
        except SinkError as e:
            raise OSError(errno.ENOENT, str(e).removeprefix(f"{self.where}: ")) from None
        if lost == "rewound":
            raise Rewound()

    def _let_go(self, fd: int) -> str:
        """Close ``fd``, a file this sink wrote to. Was it deleted (or replaced: no name left)? Then log it
        and move a journal feed back to the first event written to it since it was opened (delivered again
        now, or from the cursor at the next start). Returns '' (not lost), 'lost' or 'rewound'."""
        try:
            gone = self._regular and os.fstat(fd).st_nlink == 0
        except OSError:
            gone = False
        os.close(fd)
        if not gone:
            return ""
        first, written = self._first, self._written
        self._file, self._first, self._written = None, None, 0  # the next open is a new file, whatever its inode
        if first is None:
            logger.warning("%s: the file was deleted or replaced while open; nothing had been written to it since "
                           "it was opened; creating it again", self.where)
            return "lost"
        if isinstance(self._feed, JournalFeed):
            with self._cond:
                self._feed.rewind(first - 1)
            logger.warning("%s: the file was deleted or replaced while open; the %d event(s) written to it since it "
                           "was opened (seq %d onward) are written again from the journal into a new file",
                           self.where, written, first)
            return "rewound"
        logger.warning("%s: the file was deleted or replaced while open; the %d event(s) written to it since it "
                       "was opened (seq %d onward) are lost (this sink is not durable: durable: true would "
                       "write them again from the journal)", self.where, written, first)
        return "lost"

    def _close_device(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._regular and not self._stop.is_set():  # a failed write: the worker reopens after a backoff
            old, self._old_fd = self._old_fd, fd
            if old is not None:
                self._let_go(old)
            return
        self._let_go(fd)  # deleted while open: said, and rewritten from the journal at the next start

    def close(self, timeout: float = 5.0) -> int:
        left = super().close(timeout)
        old, self._old_fd = self._old_fd, None
        if old is not None and self._let_go(old) == "rewound":  # deleted during an outage that lasted to the end
            left = self._feed.pending()
        return left
