"""Shared test fixtures: real pseudo-terminal pairs for line-oriented device sinks."""
from __future__ import annotations

import os
import select
import time
import tty

import pytest


class Pty:
    """A real pseudo-terminal pair: the sink opens the slave's path, the test reads the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no newline translation, no echo: bytes arrive as written
        self.path = os.ttyname(self.slave)
        self.buf = b""
        self.open = True

    def read_lines(self, n: int, timeout: float = 5.0) -> list[bytes]:
        """The next ``n`` lines (with their b'\\n'), waiting on select up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {n} lines from {self.path}, got {self.buf!r}")
            if select.select([self.master], [], [], left)[0]:
                self.buf += os.read(self.master, 65536)
        lines = self.buf.split(b"\n")
        out, self.buf = [ln + b"\n" for ln in lines[:n]], b"\n".join(lines[n:])
        return out

    def quiet(self, timeout: float = 0.2) -> bytes:
        """Whatever else arrives within ``timeout`` s (b'' when nothing: no duplicates, no extras)."""
        while select.select([self.master], [], [], timeout)[0]:
            self.buf += os.read(self.master, 65536)
        out, self.buf = self.buf, b""
        return out

    def close(self) -> None:
        """Close both ends: to the sink it looks like the USB adapter was pulled."""
        if self.open:
            self.open = False
            os.close(self.master)
            os.close(self.slave)


@pytest.fixture
def ptys():
    """Makes real pty pairs and closes them at the end of the test."""
    made: list[Pty] = []

    def make() -> Pty:
        made.append(Pty())
        return made[-1]
    yield make
    for p in made:
        p.close()


@pytest.fixture(autouse=True)
def _own_state_folder(tmp_path_factory, monkeypatch):
    """Each test gets its own per-user state folder: a daemon run without state_dir journals there
    (``$XDG_STATE_HOME/edge-tsm``), and seq goes on across runs, so tests must not share one."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))  # batched graphs (edge.cache)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
