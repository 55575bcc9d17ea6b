"""``edge-tsm eval-events``: how good are the *events* on an annotated recording?

``eval`` scores clips (one label per clip). A deployment acts on events, which also depend on the
smoothing, thresholds, minimum length and cool-down of ``events:``. This runs a recording through
the runtime path (:func:`edge.classify.classify_video`: decode, the online model at its rate, the
event detector with the given settings) and matches the events to ``start,end,label`` rows (the
format of ``dataset from-recording``; background labels such as ``no_motion`` are not targets).

Matching, greedy in the order the events fired: an event matches the not yet matched annotated
segment of its label during which it started (its ``start_ts``, the first frame of the run of
frames that made it), with ``tolerance_s`` of slack on both sides; of several, the one whose start
is nearest. A matched event is a true positive; an event that matches nothing
is a false event (reported with what the annotation says at the moment it fired; when that is its own
label, why: a second event inside a segment already matched, one motion counted once, or an event that
started before the segment by more than the tolerance); a segment no event matched is a miss.
Latency: the time the start event fired minus the segment's annotated start.

Each miss says why (:func:`why_missed`), from the smoothed scores the event detector saw over the segment
(its frames replayed through a detector with the same settings): its label never reached ``enter`` (and what
the model said instead), another label scored higher, it stayed on top for fewer than ``min_frames`` frames, another
event was still on, an event of its label was on but counted elsewhere, or its label's cool-down. The first says
the model does not see the motion (teach it, or more data); the others are settings a config can change.
"""
from __future__ import annotations

import logging
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_bundle
from edge.classify import classify_video
from edge.config import EventsConfig
from edge.errors import DataError
from edge.events import Event, EventDetector, EventSettings, event_settings

logger = logging.getLogger(__name__)


def _rates(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """Precision, recall, F1 (None where undefined), unrounded."""
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (0.0 if p == 0 or r == 0 else None)
    return p, r, f1


def _prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    p, r, f1 = _rates(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": _round(p), "recall": _round(r), "f1": _round(f1)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def pair_events(events: list[Event]) -> list[dict[str, Any]]:
    """Start/end events -> one record per event: label, start (its ``start_ts``), fired (the start
    event's ``ts``), end (the end event's ``ts``; the start's if the end is missing), in seconds."""
    out: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.kind == "start":
            out[ev.id] = {"id": ev.id, "label": ev.label, "start": ev.start_ts, "fired": ev.ts, "end": ev.ts,
                          "score": round(ev.score, 4)}
        elif ev.kind == "end" and ev.id in out:
            out[ev.id]["end"] = ev.ts
    return sorted(out.values(), key=lambda e: e["fired"])


def match_events(events: list[dict[str, Any]], segments: list[dict[str, Any]], labels: list[str],
                 ignore: tuple[str, ...], tolerance_s: float) -> dict[str, Any]:
    """Match paired events to annotated segments (see the module's doc); pure, no I/O."""
    targets = [s for s in segments if s["label"] not in ignore]
    matched: dict[int, dict[str, Any]] = {}   # index in targets -> event
    false, latencies = [], []
    for ev in events:
        best, best_gap = None, float("inf")
        for i, s in enumerate(targets):
            if i in matched or s["label"] != ev["label"]:
                continue
            if s["start"] - tolerance_s <= ev["start"] <= s["end"] + tolerance_s and \
                    abs(ev["start"] - s["start"]) < best_gap:
                best, best_gap = i, abs(ev["start"] - s["start"])
        if best is None:
            truth = [s for s in segments if s["start"] <= ev["fired"] < s["end"]]
            false.append({"label": ev["label"], "fired_s": round(ev["fired"], 3), "score": ev["score"],
                          "truth": truth[0]["label"] if truth else None,
                          "why": _why_false(ev, truth[0] if truth else None, targets, matched)})
        else:
            matched[best] = ev
            latencies.append(ev["fired"] - targets[best]["start"])
    per_class = {}
    for lab in labels:
        if lab in ignore:
            continue
        tp = sum(1 for i in matched if targets[i]["label"] == lab)
        fp = sum(1 for f in false if f["label"] == lab)
        fn = sum(1 for i, s in enumerate(targets) if s["label"] == lab and i not in matched)
        if tp or fp or fn:
            per_class[lab] = _prf(tp, fp, fn)
    missed = [{"label": s["label"], "start_s": s["start"], "end_s": s["end"], "line": s["line"]}
              for i, s in enumerate(targets) if i not in matched]
    out = {"segments": len(targets), "events": len(events), **_prf(len(matched), len(false), len(missed)),
           "per_class": per_class, "latency_s": _latency(latencies),
           "latencies_s": [_round(v) for v in latencies], "false_events": false, "missed": missed}
    return out


def _latency(latencies: list[float]) -> dict[str, Any]:
    lat = sorted(latencies)
    return {"p50": _round(statistics.median(lat)) if lat else None,
            "p90": _round(lat[min(len(lat) - 1, int(0.9 * len(lat)))]) if lat else None,
            "max": _round(lat[-1]) if lat else None, "n": len(lat)}


def pool_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several recordings' results as one: matches, false events and misses summed (overall and per label),
    latency over every match. Pure."""
    tp, fp, fn = (sum(r[k] for r in results) for k in ("tp", "fp", "fn"))
    per_class: dict[str, dict[str, Any]] = {}
    for lab in dict.fromkeys(lab for r in results for lab in r["per_class"]):
        per_class[lab] = _prf(*(sum(r["per_class"].get(lab, {}).get(k, 0) for r in results)
                                for k in ("tp", "fp", "fn")))
    return {**{k: results[0][k] for k in ("model", "precision_graph", "engine", "tolerance_s") if k in results[0]},
            "recordings": len(results), "duration_s": round(sum(r["duration_s"] for r in results), 3),
            "segments": sum(r["segments"] for r in results), "events": sum(r["events"] for r in results),
            **_prf(tp, fp, fn), "per_class": per_class,
            "latency_s": _latency([v for r in results for v in r["latencies_s"]]),
            "miss_summary": miss_summary([m for r in results for m in r.get("missed", [])])}


# Why a motion was missed, in the order they are told (the first that applies).
MISS_REASONS = ("under_enter", "outscored", "too_brief", "other_event", "counted_elsewhere", "cooldown", "unscored")


def replay(frames: list[tuple[float, np.ndarray]], labels: list[str], settings: EventSettings,
           camera: str = "eval") -> tuple[list[tuple[float, np.ndarray, str | None]], list[Event]]:
    """The frames' ``(ts, probs)`` through a detector with ``settings``, once: ``(ts, smoothed scores, the event on
    after the frame or None)`` per frame past the warm-up (what the detector's decisions were made on), and the
    events it gives (one still open at the last frame ends there). Pure; a recording read without gaps (a file)
    gives the run's own detector's events and scores."""
    det = EventDetector(labels, settings, camera=camera)
    scored, events = [], []
    for i, (ts, probs) in enumerate(frames):
        events += det.update(np.asarray(probs, np.float32), ts)
        if i >= settings.warmup:
            scored.append((ts, det.smoothed.copy(), det.active_label))
    if frames:
        events += det.flush(float(frames[-1][0]))
    return scored, events


def why_missed(seg: dict[str, Any], scored: list[tuple[float, np.ndarray, str | None]], labels: list[str],
               settings: EventSettings, tolerance_s: float) -> dict[str, Any]:
    """For a missed segment: its label's peak smoothed score, the label the model scored highest most often
    over it (``mostly``), a reason (one of :data:`MISS_REASONS`) and a line saying it. Pure."""
    lab = seg["label"]
    li = labels.index(lab)
    th = settings.classes.get(lab, settings.defaults)
    win = [f for f in scored if seg["start"] - tolerance_s <= f[0] <= seg["end"] + tolerance_s]
    if not win:
        return {"peak": None, "mostly": None, "why": "unscored", "why_text": "no frame was scored in it"}
    sm = np.stack([f[1] for f in win])
    peak = float(sm[:, li].max())
    mostly = labels[Counter(int(j) for j in sm.argmax(1)).most_common(1)[0][0]]
    out = {"peak": round(peak, 4), "mostly": mostly}
    if peak < th.enter:
        return {**out, "why": "under_enter",
                "why_text": f"its score peaked at {peak:.3f}, under enter {th.enter:g}; the model said {mostly} most"}
    eligible = np.array([n not in settings.ignore for n in labels])
    best = np.where(eligible, sm, -1.0).argmax(1)
    top = (best == li) & (sm[:, li] >= th.enter)
    if not top.any():
        over = Counter(labels[int(b)] for b, v in zip(best, sm[:, li], strict=True) if v >= th.enter)
        other = over.most_common(1)[0][0]
        return {**out, "why": "outscored",
                "why_text": f"its score reached {peak:.3f} (enter {th.enter:g}) but {other} scored higher"}
    run = longest = 0
    for t in top:
        run = run + 1 if t else 0
        longest = max(longest, run)
    if longest < th.min_frames:
        return {**out, "why": "too_brief",
                "why_text": f"on top at or above enter for {longest} frame(s) in a row, under min_frames "
                            f"{th.min_frames}"}
    on = [f[2] for f, t in zip(win, top, strict=True) if t]
    others = [a for a in on if a is not None and a != lab]
    if others and len(others) == len(on):
        return {**out, "why": "other_event", "why_text": f"a {others[0]} event was still on"}
    if lab in on:
        return {**out, "why": "counted_elsewhere",
                "why_text": f"a {lab} event was on, but it started more than the tolerance before the segment "
                            "or was counted for another"}
    return {**out, "why": "cooldown", "why_text": f"within the {th.cooldown_s:g} s cool-down after a {lab} event"}


def explain_misses(result: dict[str, Any], scored: list[tuple[float, np.ndarray, str | None]], labels: list[str],
                   settings: EventSettings, tolerance_s: float) -> None:
    """Give each of ``result``'s misses (a :func:`match_events` result) its :func:`why_missed`, from the scores
    :func:`replay` gives, and the result its ``miss_summary``."""
    for m in result["missed"]:
        m.update(why_missed({"label": m["label"], "start": m["start_s"], "end": m["end_s"]}, scored, labels,
                            settings, tolerance_s))
    result["miss_summary"] = miss_summary(result["missed"])


def miss_summary(missed: list[dict[str, Any]]) -> dict[str, Any]:
    """How many misses each reason has, and for those under ``enter`` what the model said instead."""
    why = Counter(m.get("why") for m in missed if m.get("why"))
    said = Counter(m["mostly"] for m in missed if m.get("why") == "under_enter")
    return {"why": {r: why[r] for r in MISS_REASONS if why[r]}, "under_enter_said": dict(said.most_common())}


def _why_false(ev: dict[str, Any], truth: dict[str, Any] | None, targets: list[dict[str, Any]],
               matched: dict[int, dict[str, Any]]) -> str | None:
    """Why an event of the label the annotation shows is false: its segment already had its event (one
    motion, two events), or it started before that segment by more than the tolerance. None otherwise."""
    if truth is None or truth["label"] != ev["label"]:
        return None
    if any(targets[i] is truth for i in matched):
        return "segment already matched"
    return f"started {truth['start'] - ev['start']:.2f} s before the segment"


def evaluate_events(video: str | Path, annotations: str | Path, *, model: str = "default",
                    engine: str = "onnxruntime", precision: str | None = None, device: str = "CPU",
                    threads: int | None = None, events: EventsConfig | None = None,
                    tolerance_s: float = 0.5, where: str = "config") -> dict[str, Any]:
    """Run ``video`` and score its events against ``annotations``; the ``--json`` object.

    Raises:
        InputError: the video or the annotations are missing or unreadable.
        DataError: a bad annotation row, or a label the model does not have.
        ModelError, DeviceError: from the bundle and the engine.
    """
    if tolerance_s < 0:
        raise DataError(f"--tolerance {tolerance_s}: must be >= 0 seconds")
    ann = Path(annotations)
    bundle = load_bundle(model)
    rows = read_annotations(ann, bundle.labels)
    settings = event_settings(events, bundle, where)
    frames: list[tuple[float, np.ndarray]] = []
    res = classify_video(video, model=model, engine=engine, precision=precision, device=device, threads=threads,
                         events=events, camera="eval", start_time=0.0,
                         on_frame=lambda _i, ts, probs: frames.append((ts, np.array(probs, np.float32))))
    duration = res.frames_read / res.fps if res.fps else 0.0
    segments = [{"line": n, "start": s, "end": e, "label": lab} for n, s, e, lab in rows]
    late = [s for s in segments if s["start"] >= duration]
    if late:
        raise DataError(f"{ann}:{late[0]['line']}: start {late[0]['start']:g} is past the end of "
                        f"{Path(video).name} ({duration:.2f} s)")
    out = {"video": str(video), "annotations": str(ann), "model": bundle.name,
           "precision_graph": precision or bundle.precision, "engine": engine, "tolerance_s": tolerance_s,
           "duration_s": round(duration, 3), "ignored_labels": list(settings.ignore)}
    out.update(match_events(pair_events(res.events), segments, bundle.labels, tuple(settings.ignore), tolerance_s))
    explain_misses(out, replay(frames, bundle.labels, settings)[0], bundle.labels, settings, tolerance_s)
    return out


def read_annotations(ann: Path, labels: list[str]) -> list[tuple[int, float, float, str]]:
    """``ann``'s ``start,end,label`` rows (line, start, end, label), every label one of ``labels``.

    Raises:
        InputError: the file is missing or unreadable. DataError: a bad row, or a label not in ``labels``.
    """
    from edge.data.fieldclips import read_segments
    rows = read_segments(ann)
    for n, _start, _end, label in rows:
        if label not in labels:
            raise DataError(f"{ann}:{n}: label {label!r} is not one of the model's labels ({', '.join(labels)})")
    return rows


def evaluate_recordings(videos: list[str | Path], annotations: list[str | Path], **kw: Any) -> dict[str, Any]:
    """:func:`evaluate_events` on each recording (``kw``: its keywords), every annotation file read and checked
    before the first video runs; ``{"recordings": [each result], "total": pool_results(...)}``."""
    bundle = load_bundle(kw.get("model", "default"))
    for ann in annotations:
        read_annotations(Path(ann), bundle.labels)
    results = [evaluate_events(v, a, **kw) for v, a in zip(videos, annotations, strict=True)]
    return {"recordings": results, "total": pool_results(results)}


def _f(v: float | None) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def _ratios(m: dict[str, Any]) -> tuple[str, str, str]:
    """Precision, recall and F1 as text, from the counts (the JSON's 4-digit values rounded again can be off by
    one in the third digit: 257 of 275 is 0.93455, 0.9345 in the JSON, 0.935 here)."""
    p, r, f1 = _rates(m["tp"], m["fp"], m["fn"])
    return _f(p), _f(r), _f(f1)


def _headline(r: dict[str, Any], name: str) -> list[str]:
    return [f"{name}: {r['duration_s']:.1f} s, {r['segments']} annotated motions, {r['events']} "
            f"events (model {r['model']} {r['precision_graph']}, {r['engine']}; tolerance {r['tolerance_s']:g} s)",
            "precision {}  recall {}  F1 {}  ".format(*_ratios(r)) +
            f"(matched {r['tp']}, false {r['fp']}, missed {r['fn']})"]


def format_pooled(results: list[dict[str, Any]], total: dict[str, Any]) -> str:
    """Several recordings as text: each one's two lines, then all of them pooled (the per-label table)."""
    lines = [line for r in results for line in _headline(r, Path(r["video"]).name)] + [""]
    return "\n".join(lines + _body(total, f"all {total['recordings']} recordings", lists=False))


def format_report(r: dict[str, Any]) -> str:
    """The result as text (what ``edge-tsm eval-events`` prints without --json)."""
    return "\n".join(_body(r, Path(r["video"]).name))


def _body(r: dict[str, Any], name: str, lists: bool = True) -> list[str]:
    lat = r["latency_s"]
    lines = _headline(r, name)
    if lat["n"]:
        lines.append(f"latency from the annotated start to the start event: p50 {lat['p50']:.2f} s, "
                     f"p90 {lat['p90']:.2f} s, max {lat['max']:.2f} s")
    lines += ["", f"{'label':<16} {'prec':>6} {'recall':>6} {'F1':>6} {'tp':>4} {'fp':>4} {'fn':>4}"]
    for lab, m in r["per_class"].items():
        lines.append("{:<16} {:>6} {:>6} {:>6} ".format(lab, *_ratios(m)) + f"{m['tp']:>4} {m['fp']:>4} {m['fn']:>4}")
    if lists and r["false_events"]:
        lines += ["", "false events: " + ", ".join(
            f"{e['label']} at {e['fired_s']:.2f} s ({e['truth'] or 'no annotation'}"
            f"{', ' + e['why'] if e.get('why') else ''})" for e in r["false_events"][:20])
            + (" ..." if len(r["false_events"]) > 20 else "")]
    if lists and r["missed"]:
        lines += ["missed:"] + [f"  {m['label']} {m['start_s']:.2f}-{m['end_s']:.2f} s (line {m['line']})"
                                + (f": {m['why_text']}" if m.get("why_text") else "") for m in r["missed"][:20]]
        lines += ["  ..."] if len(r["missed"]) > 20 else []
    summary = r.get("miss_summary") or {}
    if summary.get("why"):
        lines += ["", "why missed: " + _why_line(summary)]
    return lines


_WHY_TEXT = {"under_enter": "its score stayed under enter", "outscored": "another label scored higher",
             "too_brief": "on top for fewer than min_frames frames", "other_event": "another event was still on",
             "counted_elsewhere": "an event of its label counted elsewhere", "cooldown": "in its cool-down",
             "unscored": "no frame scored"}


def _why_line(summary: dict[str, Any]) -> str:
    """``12 its score stayed under enter (the model said no_motion 9, zoom_in 3); 2 ...``: the first reason says
    the model does not see the motion, the others are event settings."""
    parts = []
    for why, n in summary["why"].items():
        part = f"{n} {_WHY_TEXT[why]}"
        if why == "under_enter" and summary.get("under_enter_said"):
            part += " (the model said " + ", ".join(f"{k} {v}" for k, v in summary["under_enter_said"].items()) + ")"
        parts.append(part)
    return "; ".join(parts)
