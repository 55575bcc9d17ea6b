"""Labels saved at once, atomically, in the formats the command line reads.

* spool clips: ``work/spool-labels.csv``, the review sheet's columns (``dataset from-clips --labels``);
  a write names the label the tab showed before (``was``): when the file holds another one for that clip
  now (another tab changed it), 409 and nothing is written. Two tabs labelling different clips never
  conflict.
* recording segments: ``<recording>.csv`` beside it, ``start,end,label`` (``dataset from-recording
  --annotations``); the whole list is written against the version the tab read, else 409.
* the config's ``events:`` section: replaced in the text (the rest of the file, comments included, kept),
  validated as the daemon validates it, written atomically with ``<config>.bak`` kept.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import yaml

from edge.data.fieldclips import SHEET_COLUMNS, SKIP, read_segments
from edge.errors import EdgeError
from edge.studio.library import check_label
from edge.studio.settings import StudioError, StudioSettings
from edge.util import atomic_write

SPOOL_LABELS = "spool-labels.csv"
_lock = threading.Lock()   # one read-modify-write at a time (one server process writes these files)


def version_of(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()[:16]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    try:
        atomic_write(path, text, mode=mode, fsync=True)
    except OSError as e:
        raise StudioError(422, f"{path}: cannot write ({e.strerror or e})") from None
    return version_of(text.encode("utf-8"))


# --- spool clip labels --------------------------------------------------------------------------------
_parsed: dict[Path, tuple[bytes | None, dict[str, str]]] = {}   # the last parse of each labels file


def spool_labels(s: StudioSettings) -> tuple[dict[str, str], str | None]:
    """clip (``camera/file.avi``) -> label of every reviewed clip, and the file's version (the file is read on
    every call, parsed only when its bytes changed; do not modify the dict)."""
    path = s.folder("work") / SPOOL_LABELS
    data = _read(path)
    hit = _parsed.get(path)
    if hit is None or hit[0] != data:
        hit = _parsed[path] = (data, _parse_sheet(data))
    return hit[1], version_of(data)


def _parse_sheet(data: bytes | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not data:
        return out
    for row in csv.reader(data.decode("utf-8-sig").splitlines()):
        cells = [c.strip() for c in row]
        if len(cells) < 2 or not cells[0] or cells[0].startswith("#") or tuple(cells[:2]) == SHEET_COLUMNS[:2]:
            continue
        out[cells[0]] = "skip" if cells[1].lower() in SKIP else cells[1]
    return out


def save_clip_label(s: StudioSettings, body: dict[str, Any], index: Any) -> dict[str, Any]:
    ref = body.get("path")
    video = s.resolve(ref)
    clip = s.api_path(video, "spool")
    if clip is None:
        raise StudioError(400, f"path {ref!r}: clip labels are for spool clips (spool/CAMERA/FILE)")
    clip = clip.removeprefix("spool/")
    label = body.get("label") or None
    if label is not None and label != "skip":
        check_label(label)
    was = body.get("was") or None
    path = s.folder("work") / SPOOL_LABELS
    with _lock:
        data = _read(path)
        rows = _parse_sheet(data)
        if rows.get(clip) != was:
            raise StudioError(409, f"clip {clip}: labelled {rows.get(clip) or 'nothing'!r} meanwhile (another tab?), "
                                   f"not {was or 'nothing'!r}; reload it", current=rows.get(clip),
                              version=version_of(data))
        if label is None:
            rows.pop(clip, None)
        else:
            rows[clip] = label
        meta = {c["clip"]: c for c in index.clips(s.folder("spool"))}
        version = _write(path, _sheet_text(rows, meta, data))
    return {"path": ref, "label": label, "version": version}


def _sheet_text(rows: dict[str, str], meta: dict[str, dict[str, Any]], old: bytes | None) -> str:
    """The review sheet's columns; a clip gone from the spool keeps its old row's other cells."""
    before = {}
    if old:
        for r in csv.reader(old.decode("utf-8-sig").splitlines()):
            if r and r[0].strip():
                before[r[0].strip()] = r
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SHEET_COLUMNS)
    for clip in sorted(rows):
        m = meta.get(clip)
        if m is not None:
            score = m.get("score")
            rest = [m.get("predicted") or "", "" if score is None else score, m.get("trigger") or "",
                    m.get("camera") or "", m.get("start_ts") or ""]
        else:
            rest = (before.get(clip, []) + [""] * 7)[2:7]
        w.writerow([clip, rows[clip], *rest])
    return buf.getvalue()


def export_clips(s: StudioSettings, index: Any) -> dict[str, Any]:
    """``dataset from-clips`` with the saved labels into --data; clips the quota removed are left out."""
    from edge.data.fieldclips import from_clips
    rows, _ = spool_labels(s)
    if not rows:
        raise StudioError(422, "no spool clip is labelled yet: nothing to export")
    present = {c["clip"] for c in index.clips(s.folder("spool"))}
    kept = {c: lab for c, lab in rows.items() if c in present}
    data = s.folder("data")
    sheet = s.folder("work") / ".export-labels.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SHEET_COLUMNS[:2])
    for clip, lab in sorted(kept.items()):
        w.writerow([clip, lab])
    atomic_write(sheet, buf.getvalue(), mode=0o644)
    try:
        out = from_clips(s.folder("spool"), sheet, data)
    finally:
        sheet.unlink(missing_ok=True)
    out["gone"] = len(rows) - len(kept)
    return out


# --- recording segments -------------------------------------------------------------------------------
def annotations_of(s: StudioSettings, ref: Any) -> tuple[Path, Path]:
    video = s.resolve(ref)
    if s.api_path(video, "recordings") is None:
        raise StudioError(400, f"path {ref!r}: segments are for recordings (recordings/FILE)")
    return video, video.with_suffix(".csv")


def read_segment_list(ann: Path) -> list[dict[str, Any]]:
    """The rows of a ``start,end,label`` file (none: [])."""
    data = _read(ann)
    if data is None:
        return []
    body = [ln for ln in data.decode("utf-8-sig", "replace").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    if not body or (len(body) == 1 and body[0].replace(" ", "").lower().startswith("start,end,label")):
        return []
    try:
        return [{"start": a, "end": b, "label": lab} for _, a, b, lab in read_segments(ann)]
    except EdgeError as e:
        raise StudioError(422, str(e)) from None


def get_segments(s: StudioSettings, ref: Any) -> dict[str, Any]:
    video, ann = annotations_of(s, ref)
    return {"path": ref, "annotations": s.api_path(ann), "version": version_of(_read(ann)),
            "segments": read_segment_list(ann)}


def save_segments(s: StudioSettings, body: dict[str, Any]) -> dict[str, Any]:
    ref = body.get("path")
    video, ann = annotations_of(s, ref)
    segs = body.get("segments")
    if not isinstance(segs, list):
        raise StudioError(400, "segments: expected a list of {start, end, label}")
    clean = []
    for i, seg in enumerate(segs):
        if not isinstance(seg, dict):
            raise StudioError(400, f"segments[{i}]: expected {{start, end, label}}")
        a, b = seg.get("start"), seg.get("end")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1e7 for x in (a, b)) \
                or round(b, 3) <= round(a, 3):
            raise StudioError(400, f"segments[{i}]: start {a!r} and end {b!r}: expected seconds, 0 <= start < end")
        clean.append({"start": round(float(a), 3), "end": round(float(b), 3),
                      "label": check_label(seg.get("label"), f"segments[{i}].label")})
    clean.sort(key=lambda x: (x["start"], x["end"], x["label"]))
    with _lock:
        current = _read(ann)
        if version_of(current) != body.get("version"):
            raise StudioError(409, f"{ann.name}: changed since this tab read it (another tab?); reload it",
                              version=version_of(current), segments=read_segment_list(ann))
        text = "start,end,label\n" + "".join(f"{x['start']:.3f},{x['end']:.3f},{x['label']}\n" for x in clean)
        version = _write(ann, text)
    return {"path": ref, "version": version, "segments": clean}


# --- dataset clips ------------------------------------------------------------------------------------
def move_clip(s: StudioSettings, body: dict[str, Any]) -> dict[str, Any]:
    src = s.resolve(body.get("path"))
    if s.api_path(src, "data") is None or len(src.relative_to(s.folders["data"]).parts) != 2:
        raise StudioError(400, f"path {body.get('path')!r}: expected a dataset clip data/LABEL/FILE")
    label = check_label(body.get("label"))
    dest = s.folders["data"] / label / src.name
    with _lock:
        if dest.exists():
            raise StudioError(409, f"data/{label}/{src.name}: already there")
        dest.parent.mkdir(exist_ok=True)
        os.rename(src, dest)
    return {"path": f"data/{label}/{src.name}"}


def add_class(s: StudioSettings, name: Any, known: list[str]) -> None:
    name = check_label(name, "class")
    if name in known:
        return
    path = s.folder("work") / "classes.txt"
    with _lock:
        old = (_read(path) or b"").decode("utf-8")
        if name not in old.split():
            _write(path, old + ("" if not old or old.endswith("\n") else "\n") + name + "\n")


# --- config events ------------------------------------------------------------------------------------
_TOP = re.compile(r"^events\s*:")


def read_config(s: StudioSettings) -> tuple[Path, bytes]:
    if s.config is None:
        raise StudioError(404, "no config: start the studio with --config FILE")
    data = _read(s.config)
    if data is None:
        raise StudioError(404, f"config {s.config}: no such file")
    return s.config, data


def replace_events(text: str, events: dict[str, Any]) -> str:
    """``text`` with its top-level ``events:`` block replaced by ``events`` (appended when absent)."""
    block = yaml.safe_dump({"events": events}, sort_keys=False, default_flow_style=False) if events else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if _TOP.match(ln)), None)
    if start is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + block
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def save_events(s: StudioSettings, body: dict[str, Any], model_labels: Any) -> dict[str, Any]:
    from edge.config import EventsConfig, config_from_data, parse_yaml
    events = body.get("events")
    if not isinstance(events, dict):
        raise StudioError(400, "events: expected the events: section as an object")
    with _lock:
        path, data = read_config(s)
        if version_of(data) != body.get("version"):
            raise StudioError(409, f"config {path}: changed since this tab read it; reload it",
                              version=version_of(data))
        text = data.decode("utf-8")
        new = replace_events(text, events)
        where = f"config {path} (events from the studio)"
        try:
            cfg = config_from_data(parse_yaml(new, where), where)
            if cfg.events != EventsConfig.model_validate(events):
                raise StudioError(422, f"config {path}: its events: section could not be replaced in place "
                                       "(not a block at the top level?); edit it by hand")
            model_labels(cfg)
        except EdgeError as e:
            raise StudioError(400, str(e)) from None
        backup = path.with_name(path.name + ".bak")
        atomic_write(backup, data, mode=stat.S_IMODE(path.stat().st_mode))
        version = _write(path, new)
    return {"version": version, "backup": str(backup)}
