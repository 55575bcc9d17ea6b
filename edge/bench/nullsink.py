"""Null sink: takes every event through the same queue and worker as a real sink, writes nothing,
and records how long each event took from its frame's capture time to delivery (for ``edge-tsm bench``).

It is not in the config's sink registry (no ``type: null`` in a config file): the bench builds it
directly (:func:`edge.bench.kit.open_pipeline`) and adds it to a pipeline after it is opened.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from edge.events import Event
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
        self._capture_ts: dict[int, float] = {}  # seq -> capture time of the frame that made the event

    def _open_device(self) -> None:
        pass

    def expect(self, event: Event, seq: int) -> None:
        """The pipeline's event callback: remember the event's float ``ts`` (its frame's capture time)."""
        with self._lat_lock:
            self._capture_ts[seq] = event.ts

    def _write(self, event: dict[str, Any]) -> None:
        """Record now - the capture time of the frame that made the event (given to :meth:`expect`)."""
        with self._lat_lock:
            ts = self._capture_ts.pop(event["seq"], None)
            if ts is not None:
                self._lat.append((self._clock() - ts) * 1000.0)

    def _close_device(self) -> None:
        pass

    def latencies_ms(self, clear: bool = False) -> list[float]:
        """Capture-to-delivery milliseconds of the events delivered so far (and forget them if ``clear``)."""
        with self._lat_lock:
            out = list(self._lat)
            if clear:
                self._lat.clear()
        return out

