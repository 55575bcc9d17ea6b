"""The jobs' work: teach a bundle from the dataset, evaluate a bundle's events on an annotated recording."""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from edge.studio.jobs import Cancelled, Job
from edge.studio.labels import annotations_of
from edge.studio.library import check_label
from edge.studio.scores import Scores, replay_scored, rounded
from edge.studio.settings import StudioError, StudioSettings

logger = logging.getLogger(__name__)


def teach_work(s: StudioSettings, scores: Scores, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Checks the request now (400/404/409 at submit), returns (params, work)."""
    name = check_label(body.get("name"), "name")
    data = s.folder("data")
    out = s.folder("work") / "bundles" / name
    if out.exists():
        raise StudioError(409, f"work/bundles/{name}: already there; choose another name")
    base = scores.bundle("default")
    options = _teach_options(body.get("options") or {})

    def work(job: Job) -> dict[str, Any]:
        try:
            from edge.teach import TeachError, teach
        except ImportError as e:
            raise StudioError(503, f"teach is not in this install (edge.teach: {e})") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        engine = s.engine.get("type")
        try:
            from edge.teach.core import TeachOptions
            report = teach(base.root, data, out, engine=engine, progress=job.progress, cancel=job.cancel,
                           options=TeachOptions(**options))
        except TeachError:
            if job.cancel.is_set():
                raise Cancelled() from None   # teach leaves nothing behind when cancelled
            raise
        if job.cancel.is_set():
            raise Cancelled()
        r = dataclasses.asdict(report) if dataclasses.is_dataclass(report) else dict(vars(report))
        r["folder"] = str(out)
        r["out"] = s.api_path(out, "work")
        for m in r.get("misclassified") or []:
            m["path"] = s.api_path(m["path"]) or str(m["path"])
        if r.get("skipped"):
            r["skipped"] = [s.api_path(x) or str(x) if not isinstance(x, dict) else
                            {**x, "path": s.api_path(x.get("path", "")) or x.get("path")} for x in r["skipped"]]
        return _plain(r)

    return {"name": name, "base": base.name, "data": "data", "options": options}, work


_OPTIONS = {"cross_validate": (bool,), "phases": (bool,), "stills": (bool,), "augment": (int,)}


def _teach_options(raw: Any) -> dict[str, Any]:
    """The few teach options the page may set (a quicker teach: no cross-validation, fewer samplings)."""
    if not isinstance(raw, dict) or set(raw) - set(_OPTIONS):
        raise StudioError(400, f"options: expected an object with some of {', '.join(_OPTIONS)}")
    for k, v in raw.items():
        if type(v) not in _OPTIONS[k] or (k == "augment" and not 0 <= v <= 4):
            raise StudioError(400, f"options.{k} {v!r}: expected {'0..4' if k == 'augment' else 'true or false'}")
    return dict(raw)


def eval_work(s: StudioSettings, scores: Scores, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """eval-events of a model on a recording with its saved segments (the ``--json`` object + the events)."""
    from edge.data.fieldclips import read_segments
    from edge.errors import EdgeError
    from edge.evalevents import explain_misses, match_events, pair_events
    ref = body.get("path")
    video, ann = annotations_of(s, ref)
    if not ann.is_file():
        raise StudioError(404, f"{ann.name}: no segments saved for {video.name} yet")
    model = body.get("model") or "default"
    tolerance = body.get("tolerance", 0.5)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 <= tolerance <= 60:
        raise StudioError(400, f"tolerance {tolerance!r}: expected seconds, 0..60")
    b = scores.bundle(model)

    def work(job: Job) -> dict[str, Any]:
        try:
            rows = read_segments(ann)
        except EdgeError as e:
            raise StudioError(422, str(e)) from None
        for n, _a, _b, label in rows:
            if label not in b.labels:
                raise StudioError(422, f"{ann.name}:{n}: label {label!r} is not one of model {b.name}'s labels "
                                       f"({', '.join(b.labels)})")
        job.progress("scores", 0, 1)
        data = scores.scores(video, model, cancel=job.cancel)
        job.progress("match", 1, 1)
        settings = scores.settings(b)
        scored, evs = replay_scored(data["labels"], settings, data["t"], data["probs"])
        events = pair_events(evs)
        duration = data["frames"] / data["fps"] if data["fps"] else 0.0
        segments = [{"line": n, "start": a, "end": e, "label": lab} for n, a, e, lab in rows]
        late = [x for x in segments if x["start"] >= duration]
        if late:
            raise StudioError(422, f"{ann.name}:{late[0]['line']}: start {late[0]['start']:g} is past the end of "
                                   f"{video.name} ({duration:.2f} s)")
        out = {"video": ref, "annotations": s.api_path(ann), "model": b.name, "engine": s.engine.get("type"),
               "tolerance_s": tolerance, "duration_s": round(duration, 3), "ignored_labels": list(settings.ignore)}
        out.update(match_events(events, segments, b.labels, tuple(settings.ignore), tolerance))
        explain_misses(out, scored, b.labels, settings, tolerance)
        false = {(f["label"], f["fired_s"]) for f in out["false_events"]}
        out["event_count"] = out["events"]   # the CLI's count; "events" is the list the timeline draws
        out["events"] = [{**e, "matched": (e["label"], round(e["fired"], 3)) not in false} for e in rounded(events)]
        return out

    return {"path": ref, "model": model, "tolerance": tolerance}, work


def _plain(v: Any) -> Any:
    """JSON-able: paths and numpy values as plain types."""
    import numpy as np
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None   # teach's accuracy is NaN without cross-validation: JSON has no NaN
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
