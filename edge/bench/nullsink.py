"""Null sink: takes every event through the same queue and worker as a real sink, writes nothing,
and records how long each event took from its frame's capture time to delivery (for ``edge-tsm bench``).

It is not in the config's sink registry (no ``type: null`` in a config file): the bench builds it
directly (:func:`edge.bench.kit.open_pipeline`) and adds it to a pipeline after it is opened.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge.sinks.base import Sink


@dataclass(frozen=True)
class NullSinkConfig:
    """The keys the Sink base reads; no device keys."""

    queue_size: int = 100_000
    cameras: list[str] | None = None
    events: tuple[str, ...] = ("start", "end")
    durable: bool = False


class NullSink(Sink):
    """Discards events; ``latencies_ms()`` gives capture-to-delivery times of those delivered so far."""

    type = "null"

    def __init__(self, cfg: NullSinkConfig | None = None, name: str = "null", clock: Any = time.time) -> None:
        super().__init__(cfg or NullSinkConfig(), name)
        self.target = "nothing (bench)"
        self._clock = clock
        self._lat_lock = threading.Lock()
        self._lat: list[float] = []

    def _open_device(self) -> None:
        pass

    def _write(self, event: dict[str, Any]) -> None:
        """Record now - the event's ``ts`` (the capture time of the frame that caused it, ms resolution)."""
        ms = (self._clock() - _epoch(event["ts"])) * 1000.0
        with self._lat_lock:
            self._lat.append(ms)

    def _close_device(self) -> None:
        pass

    def latencies_ms(self, clear: bool = False) -> list[float]:
        """Capture-to-delivery milliseconds of the events delivered so far (and forget them if ``clear``)."""
        with self._lat_lock:
            out = list(self._lat)
            if clear:
                self._lat.clear()
        return out


def _epoch(ts: str) -> float:
    """``2026-11-24T14:03:05.123Z`` (:func:`edge.events.iso_ts`) -> seconds since the epoch."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
