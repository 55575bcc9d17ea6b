"""The event state machine, stepped frame by frame with explicit time."""
from __future__ import annotations

import numpy as np
import pytest

from edge.events import EventDetector, EventSettings, Thresholds, iso_ts

LABELS = ["no_motion", "swipe_left", "swipe_right"]


def onehot(i: int, p: float = 0.9) -> np.ndarray:
    v = np.full(3, (1 - p) / 2, np.float32)
    v[i] = p
    return v


def run(det: EventDetector, seq, t0: float = 1000.0, dt: float = 0.1):
    out = []
    for k, probs in enumerate(seq):
        for ev in det.update(probs, t0 + k * dt):
            out.append((k, ev))
    return out


def test_start_after_min_frames_end_below_exit():
    det = EventDetector(LABELS, EventSettings(window=1, defaults=Thresholds(0.7, 0.5, 3, 0.0)), camera="door")
    seq = [onehot(0)] * 2 + [onehot(1)] * 5 + [onehot(1, 0.6)] * 2 + [onehot(0)] * 2
    evs = run(det, seq)
    assert [(k, e.kind, e.label) for k, e in evs] == [(4, "start", "swipe_left"), (9, "end", "swipe_left")]
    start, end = evs[0][1], evs[1][1]
    assert start.frames == 3 and start.score == pytest.approx(0.9)
    assert start.start_ts == pytest.approx(1000.2) and start.ts == pytest.approx(1000.4)
    assert end.id == start.id and end.frames == 3 + 4 and end.score == pytest.approx(0.9)
    assert start.camera == "door"
    rec = start.record(7)  # serialized once, where the event gets its seq: the README's schema
    assert set(rec) == {"v", "event", "id", "camera", "label", "score", "ts", "start_ts", "frames", "seq"}
    assert rec["v"] == 1 and rec["seq"] == 7 and rec["event"] == "start" and rec["camera"] == "door"
    assert rec["start_ts"] == iso_ts(1000.2) and rec["ts"] == iso_ts(1000.4)
    with pytest.raises(AttributeError):
        start.label = "other"  # frozen: what the detector made is what every sink gets


def test_ignored_labels_never_fire_and_short_bursts_do_not_either():
    det = EventDetector(LABELS, EventSettings(window=1, ignore=("no_motion",),
                                              defaults=Thresholds(0.7, 0.5, 3, 0.0)))
    assert run(det, [onehot(0)] * 10) == []
    assert run(det, [onehot(1), onehot(1), onehot(0), onehot(1), onehot(1), onehot(0)]) == []


def test_cooldown_and_per_class_overrides():
    s = EventSettings(window=1, defaults=Thresholds(0.7, 0.5, 1, 1.0),
                      classes={"swipe_right": Thresholds(0.95, 0.5, 1, 0.0)})
    det = EventDetector(LABELS, s)
    seq = [onehot(1), onehot(0, 0.4), onehot(1), onehot(1), onehot(1), onehot(1), onehot(1)]
    # ends at frame 1; cooldown 1 s = 10 frames at 0.1 s: the swipe_left at 2..6 is suppressed
    assert [(k, e.kind) for k, e in run(det, seq)] == [(0, "start"), (1, "end")]
    det2 = EventDetector(LABELS, s)
    assert run(det2, [onehot(2, 0.9)] * 3) == []          # below its own enter threshold 0.95
    assert [e.kind for _, e in run(det2, [onehot(2, 0.97)])] == ["start"]


def test_moving_average_smooths_a_single_spike():
    det = EventDetector(LABELS, EventSettings(window=4, ignore=("no_motion",),
                                              defaults=Thresholds(0.7, 0.5, 1, 0.0)))
    assert run(det, [onehot(0)] * 4 + [onehot(1)] + [onehot(0)] * 4) == []
    assert det.smoothed.argmax() == 0
    evs = run(det, [onehot(1)] * 4)
    assert [e.kind for _, e in evs] == ["start"]
    assert det.active_label == "swipe_left"


def test_ema_and_flush_and_reset():
    det = EventDetector(LABELS, EventSettings(window=3, smoothing="ema", defaults=Thresholds(0.7, 0.5, 2, 0.0)))
    evs = run(det, [onehot(2)] * 4)
    assert [e.kind for _, e in evs] == ["start"]
    ends = det.flush(2000.0)
    assert ends[0].kind == "end" and ends[0].ts == 2000.0
    assert det.flush(2001.0) == []
    run(det, [onehot(1)] * 4)
    assert [e.kind for e in det.reset(3000.0)] == ["end"]
    assert det.active_label is None


def test_unknown_labels_in_settings_are_refused():
    with pytest.raises(ValueError, match="unknown label 'wave'"):
        EventDetector(LABELS, EventSettings(ignore=("wave",)))


def test_warmup_skips_the_first_decisions_after_start_and_reset():
    """The zero-state transient: the first `warmup` frames after a start or a reset make no event."""
    det = EventDetector(LABELS, EventSettings(window=1, defaults=Thresholds(0.7, 0.5, 2, 0.0), warmup=3))
    evs = run(det, [onehot(1)] * 5 + [onehot(0)])
    assert [(k, e.kind) for k, e in evs] == [(4, "start"), (5, "end")]  # without warm-up: start at 1
    det.reset(2000.0)
    assert run(det, [onehot(2)] * 3, t0=2000.1) == []           # warming up again
    assert [e.label for _, e in run(det, [onehot(2)] * 2, t0=2000.5)] == ["swipe_right"]
