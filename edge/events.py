"""Per-frame probabilities -> classification events. Pure: no I/O, no clock (time is passed in).

One detector per camera. Each frame: the probabilities are smoothed (moving average over
``window`` frames, or EMA), then a small state machine with hysteresis runs:

* idle: the best non-ignored label must stay at or above its ``enter`` threshold for ``min_frames``
  consecutive frames, and its ``cooldown_s`` since its last event must have passed -> ``start``;
* active: the event ends when its label's smoothed score falls below ``exit`` -> ``end``
  (``frames`` = frames the event lasted, ``score`` = its peak smoothed score).

:meth:`EventDetector.flush` ends an active event (a capture gap, shutdown).

The first ``warmup`` frames after the detector starts or is reset (a capture gap, which also zeroes
the model's temporal states) are not used: an online TSM starts from zero states, and its first few
outputs are a transient (the embedded model says ``zoom_in`` for about half a second on a still
scene), not what the camera shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.bundle import Bundle
    from edge.config import EventsConfig

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Thresholds:
    enter: float = 0.7
    exit: float = 0.5
    min_frames: int = 4
    cooldown_s: float = 2.0


@dataclass(frozen=True)
class EventSettings:
    window: int = 8
    smoothing: str = "mean"          # mean | ema
    ema_alpha: float | None = None   # default 2 / (window + 1)
    defaults: Thresholds = field(default_factory=Thresholds)
    ignore: tuple[str, ...] = ()
    classes: dict[str, Thresholds] = field(default_factory=dict)
    warmup: int = 0                  # frames ignored after a start or reset (the states' transient)


_BACKGROUND = {"no_motion", "no gesture", "doing other things", "background", "none"}


def default_event_settings(bundle: Bundle) -> EventSettings:
    """Event settings that suit a bundle's decision rate when the user gives none.

    About half a second of smoothing at the rate the graph runs; ``no_motion``-like background
    labels (``no_motion``, ``No gesture``, ``Doing other things``) are ignored. Online bundles (with
    temporal states) skip their first 0.6 s after a start or a gap (the zero-state transient).
    """
    rate = bundle.temporal.fps / max(1, bundle.temporal.frame_stride)
    window = max(2, round(rate * 0.6))
    warmup = round(rate * 0.6) if bundle.states else 0
    ignore = tuple(lab for lab in bundle.labels if lab.lower() in _BACKGROUND)
    return EventSettings(window=window, defaults=Thresholds(enter=0.6, exit=0.4, min_frames=2, cooldown_s=0.5),
                         ignore=ignore, warmup=warmup)


def _over(base: Thresholds, c: Any) -> Thresholds:
    """``base`` with the values a config section sets (None: keep)."""
    return Thresholds(enter=base.enter if c.enter is None else c.enter, exit=base.exit if c.exit is None else c.exit,
                      min_frames=base.min_frames if c.min_frames is None else c.min_frames,
                      cooldown_s=base.cooldown_s if c.cooldown_s is None else c.cooldown_s)


def event_settings(ev: EventsConfig | None, bundle: Bundle, where: str = "config") -> EventSettings:
    """The config's ``events`` section over the defaults that suit the bundle's decision rate.

    Raises:
        ConfigError: a label in ``ignore`` / ``classes`` is not one of the model's, or a class's
            exit threshold ends up above its enter threshold.
    """
    base = default_event_settings(bundle)
    if ev is None:
        return base
    for key, names in (("ignore", ev.ignore or []), ("classes", list(ev.classes))):
        for name in names:
            if name not in bundle.labels:
                raise ConfigError(f"{where}: events.{key}: {name!r} is not a label of model {bundle.name!r} "
                                  f"(labels: {', '.join(bundle.labels)})")
    d = _over(base.defaults, ev)
    if d.exit > d.enter:
        raise ConfigError(f"{where}: events: exit ({d.exit}) must be <= enter ({d.enter})")
    classes = {}
    for name, c in ev.classes.items():
        classes[name] = t = _over(d, c)
        if t.exit > t.enter:
            raise ConfigError(f"{where}: events.classes.{name}: exit ({t.exit}) must be <= enter ({t.enter})")
    return EventSettings(window=base.window if ev.window is None else ev.window, smoothing=ev.smoothing,
                         ema_alpha=ev.ema_alpha, defaults=d,
                         ignore=base.ignore if ev.ignore is None else tuple(ev.ignore), classes=classes,
                         warmup=base.warmup if ev.warmup is None else ev.warmup)


def iso_ts(t: float) -> str:
    """Seconds since the epoch -> ``2026-11-24T14:03:05.123Z``."""
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Event:
    """One start or end of a classification event, as the detector makes it: float times, no ``seq``.

    ``seq`` and the schema version are added once, by :meth:`record`, where the event is journaled; every
    sink and every printer gets that record, so the same event carries the same ``seq`` everywhere.
    """

    kind: str          # "start" | "end"
    id: str
    camera: str
    label: str
    score: float       # start: the smoothed score when it started; end: the peak over the event
    ts: float          # when the event fired (seconds since the epoch, or the file's clock)
    start_ts: float    # first frame of the run of frames that made it
    frames: int        # start: frames above enter; end: frames the event lasted

    def record(self, seq: int) -> dict[str, Any]:
        """The event schema's JSON object (``v``, ISO times, ``seq``)."""
        return {"v": SCHEMA_VERSION, "event": self.kind, "id": self.id, "camera": self.camera,
                "label": self.label, "score": round(self.score, 4), "ts": iso_ts(self.ts),
                "start_ts": iso_ts(self.start_ts), "frames": self.frames, "seq": seq}


class EventDetector:
    """Hysteresis over smoothed scores for one camera; see the module docstring."""

    def __init__(self, labels: list[str], settings: EventSettings, camera: str = "camera") -> None:
        self.labels = list(labels)
        self.settings = settings
        self.camera = camera
        k = len(labels)
        unknown = [n for n in (*settings.ignore, *settings.classes) if n not in self.labels]
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r}; the model's labels are {', '.join(self.labels)}")
        th = [settings.classes.get(n, settings.defaults) for n in self.labels]
        self._enter = np.array([t.enter for t in th], np.float32)
        self._exit = np.array([t.exit for t in th], np.float32)
        self._min_frames = [t.min_frames for t in th]
        self._cooldown = [t.cooldown_s for t in th]
        self._eligible = np.array([n not in settings.ignore for n in self.labels])
        self._ring = np.zeros((max(1, settings.window), k), np.float32)
        self._sum = np.zeros(k, np.float64)
        self._smoothed = np.zeros(k, np.float32)
        self._alpha = settings.ema_alpha or 2.0 / (settings.window + 1)
        self._count = 0
        self._since_reset = 0
        self._n_events = 0
        self._last_end = np.full(k, -np.inf)
        self._candidate = -1
        self._candidate_frames = 0
        self._candidate_since = 0.0
        self._active: dict[str, Any] | None = None

    @property
    def smoothed(self) -> np.ndarray:
        return self._smoothed

    @property
    def active_label(self) -> str | None:
        return self._active["label"] if self._active else None

    def reset(self, ts: float) -> list[Event]:
        """Forget the smoothing history (after a capture gap); ends an active event."""
        events = self.flush(ts)
        self._ring[:] = 0
        self._sum[:] = 0
        self._count = 0
        self._since_reset = 0
        self._candidate, self._candidate_frames = -1, 0
        return events

    def update(self, probs: np.ndarray, ts: float) -> list[Event]:
        """Feed one frame's probabilities at time ``ts`` (seconds); return the events it causes."""
        self._since_reset += 1
        if self._since_reset <= self.settings.warmup:
            return []
        s = self._smooth(probs)
        events: list[Event] = []
        if self._active is not None:
            i = self._active["index"]
            if s[i] < self._exit[i]:
                events.append(self._end(ts))
            else:
                self._active["frames"] += 1
                self._active["peak"] = max(self._active["peak"], float(s[i]))
                return events
        masked = np.where(self._eligible, s, -1.0)
        best = int(np.argmax(masked))
        if masked[best] >= self._enter[best]:
            if best != self._candidate:
                self._candidate, self._candidate_frames, self._candidate_since = best, 0, ts
            self._candidate_frames += 1
            if (self._candidate_frames >= self._min_frames[best]
                    and ts - self._last_end[best] >= self._cooldown[best]):
                events.append(self._start(best, float(s[best]), ts))
        else:
            self._candidate, self._candidate_frames = -1, 0
        return events

    def flush(self, ts: float) -> list[Event]:
        return [self._end(ts)] if self._active is not None else []

    def _smooth(self, probs: np.ndarray) -> np.ndarray:
        if self.settings.smoothing == "ema":
            if self._count == 0:
                self._smoothed[:] = probs
            else:
                self._smoothed += self._alpha * (probs - self._smoothed)
            self._count += 1
            return self._smoothed
        w = self._ring.shape[0]
        slot = self._count % w
        if self._count >= w:
            self._sum -= self._ring[slot]
        self._ring[slot] = probs
        self._sum += probs
        self._count += 1
        np.divide(self._sum, min(self._count, w), out=self._smoothed, casting="unsafe")
        return self._smoothed

    def _event(self, a: dict[str, Any], kind: str, ts: float) -> Event:
        return Event(kind, a["id"], self.camera, a["label"], float(a["peak"] if kind == "end" else a["score"]),
                     float(ts), float(a["start"]), int(a["frames"]))

    def _start(self, index: int, score: float, ts: float) -> Event:
        self._n_events += 1
        start = self._candidate_since
        self._active = {"index": index, "label": self.labels[index], "score": score, "peak": score,
                        "start": start, "frames": self._candidate_frames,
                        "id": f"{self.camera}-{int(start * 1000):x}-{self._n_events}"}
        self._candidate, self._candidate_frames = -1, 0
        return self._event(self._active, "start", ts)

    def _end(self, ts: float) -> Event:
        """End the active event (callers check there is one)."""
        active = self._active or {}
        ev = self._event(active, "end", ts)
        self._last_end[active["index"]] = ts
        self._active = None
        return ev
