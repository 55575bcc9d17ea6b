"""From the field back to training data: reviewed spool clips and annotated recordings -> datasets.

``edge-tsm dataset from-clips --spool DIR --sheet FILE.csv`` writes a review sheet of the spool (one
row per clip: ``clip,label,predicted,score,trigger,camera,start``, the label column empty); a person
fills in the labels (empty or ``skip`` leaves a clip out) and ``edge-tsm dataset from-clips --spool
DIR --labels FILE.csv --out DIR`` copies the labelled clips into the ``ROOT/<label>/*.avi`` layout
that ``train`` and ``eval`` read, with ``from-clips.json`` recording where each came from.

``edge-tsm dataset from-recording VIDEO --annotations FILE.csv --out DIR`` cuts a long recording by
``start,end,label`` rows (seconds, ``MM:SS(.fff)`` or ``HH:MM:SS(.fff)``) into clips at the
recording's own frame rate.

Both read the whole CSV before writing anything: a bad row is one line naming ``FILE:LINE`` and
nothing is half done. Torch-free.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import cv2

from edge.errors import DataError, InputError

logger = logging.getLogger(__name__)

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SKIP = {"", "skip", "-"}
SHEET_COLUMNS = ("clip", "label", "predicted", "score", "trigger", "camera", "start")
CLIP_SUFFIXES = (".avi", ".mp4")


def _rows(path: Path, header: tuple[str, ...], min_cols: int) -> list[tuple[int, list[str]]]:
    """Non-empty, non-comment CSV rows with their line numbers; a first row equal to ``header`` is skipped."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    out = []
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not out and tuple(c.lower() for c in cells[:len(header)]) == header[:len(cells)]:
            continue
        if len(cells) < min_cols:
            raise DataError(f"{path}:{n}: expected {min_cols} columns ({', '.join(header[:min_cols])}), "
                            f"got {len(cells)}: {','.join(row)!r}")
        out.append((n, cells))
    if not out:
        raise DataError(f"{path}: no rows (expected {', '.join(header[:min_cols])})")
    return out


def _check_label(path: Path, n: int, label: str) -> None:
    if not LABEL_RE.match(label):
        raise DataError(f"{path}:{n}: label {label!r} is not a usable folder name (letters, digits, _ . -; "
                        "first a letter or digit; at most 64)")


# --- spool -> dataset ---------------------------------------------------------------------------------
def spool_clips(spool: str | Path) -> list[dict[str, Any]]:
    """The complete clips in a spool (video + sidecar), oldest first, each its sidecar plus ``path``.

    Raises:
        InputError: the spool is not a folder.
    """
    root = Path(spool)
    if not root.is_dir():
        raise InputError(f"spool {root}: not a folder (the daemon's clips.dir)")
    out = []
    for side in sorted(root.glob("*/*.json")):
        if side.name.startswith("."):
            continue
        video = next((side.with_suffix(s) for s in CLIP_SUFFIXES if side.with_suffix(s).is_file()), None)
        if video is None:
            continue
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            logger.warning("spool %s: sidecar %s unreadable (%s); clip left out", root, side, e)
            continue
        meta["path"] = video
        meta["clip"] = f"{video.parent.name}/{video.name}"
        out.append(meta)
    out.sort(key=lambda m: (m.get("start_ts", ""), m["clip"]))
    return out


def write_sheet(spool: str | Path, sheet: str | Path) -> int:
    """A review sheet of every clip in the spool, label column empty; returns the number of rows."""
    clips = spool_clips(spool)
    if not clips:
        raise DataError(f"spool {spool}: no clips (video + .json sidecar) in it yet")
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SHEET_COLUMNS)
        for m in clips:
            score = m.get("predicted_score")
            w.writerow([m["clip"], "", m.get("predicted") or "", "" if score is None else score,
                        m.get("trigger", ""), m.get("camera", ""), m.get("start_ts", "")])
    return len(clips)


def from_clips(spool: str | Path, labels_csv: str | Path, out: str | Path) -> dict[str, Any]:
    """Copy the labelled clips of a reviewed spool into ``out/<label>/``; returns a summary.

    Rows are ``clip,label`` (more columns, as in the review sheet, are ignored). ``clip`` is the
    sidecar's ``clip`` (``camera/file.avi``) or a bare file name or stem; an empty label or ``skip``
    leaves the clip out.
    Raises:
        InputError: the spool or the CSV is missing.
        DataError: a row names no clip of the spool, an ambiguous one, or a bad label; no labelled rows.
    """
    root, csv_path, out = Path(spool), Path(labels_csv), Path(out)
    clips = spool_clips(root)
    by_rel = {m["clip"]: m for m in clips}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for m in clips:
        for key in (m["path"].name, m["path"].stem):
            by_name.setdefault(key, []).append(m)
    chosen: list[tuple[dict[str, Any], str]] = []
    dropped: list[dict[str, Any]] = []   # marked skip (or emptied): a copy from an earlier run goes too
    seen: dict[str, int] = {}
    skipped = 0
    for n, cells in _rows(csv_path, SHEET_COLUMNS, 2):
        ref, label = cells[0], cells[1]
        m = by_rel.get(ref)
        if m is None:
            hits = by_name.get(Path(ref).name, [])
            if len(hits) > 1:
                raise DataError(f"{csv_path}:{n}: clip {ref!r} is ambiguous in spool {root} "
                                f"({', '.join(h['clip'] for h in hits[:3])}); give camera/file")
            if not hits:
                raise DataError(f"{csv_path}:{n}: clip {ref!r} is not in spool {root} (removed by the quota? "
                                f"{len(clips)} clips there)")
            m = hits[0]
        if m["clip"] in seen:
            raise DataError(f"{csv_path}:{n}: clip {m['clip']} is labelled twice (first at line {seen[m['clip']]})")
        seen[m["clip"]] = n
        if label.lower() in SKIP:
            skipped += 1
            dropped.append(m)
            continue
        _check_label(csv_path, n, label)
        chosen.append((m, label))
    if not chosen:
        raise DataError(f"{csv_path}: no labelled clip (every row is empty or skip)")
    manifest_path = out / "from-clips.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"clips": []}
    removed = 0
    for m in dropped:  # the dataset and its manifest must say what the summary says: skipped clips are out
        name = _dest_name(m)
        for old in out.glob(f"*/{name}"):
            old.unlink()
            removed += 1
            if not any(old.parent.iterdir()):
                old.parent.rmdir()
        manifest["clips"] = [c for c in manifest["clips"] if not c["file"].endswith("/" + name)]
    known = {c["file"] for c in manifest["clips"]}
    counts: dict[str, int] = {}
    new = 0
    for m, label in chosen:
        dest = out / label / _dest_name(m)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # a clip relabelled since the last run moves: drop the copy under its old label
        for old in out.glob(f"*/{dest.name}"):
            if old != dest:
                old.unlink()
                if not any(old.parent.iterdir()):
                    old.parent.rmdir()  # an empty label folder would be a class without clips
        shutil.copy2(m["path"], dest)
        rel = f"{label}/{dest.name}"
        new += rel not in known
        manifest["clips"] = [c for c in manifest["clips"] if not c["file"].endswith("/" + dest.name)]
        manifest["clips"].append({"file": rel, "label": label, "source": str(m["path"]),
                                  "predicted": m.get("predicted"), "trigger": m.get("trigger"),
                                  "camera": m.get("camera"), "start_ts": m.get("start_ts"),
                                  "model": m.get("model")})
        counts[label] = counts.get(label, 0) + 1
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return {"out": str(out), "clips": len(chosen), "new": new, "skipped": skipped, "removed": removed,
            "per_label": counts}


def _dest_name(m: dict[str, Any]) -> str:
    """A spool clip's file name in the dataset: ``<camera>-<file>`` (clips of two cameras never collide)."""
    return f"{m.get('camera') or m['path'].parent.name}-{m['path'].name}"


# --- recording -> dataset -----------------------------------------------------------------------------
def parse_time(text: str) -> float:
    """``12.5``, ``1:02.5`` or ``01:02:03.250`` -> seconds; ValueError otherwise."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(not p for p in parts):
        raise ValueError(text)
    secs = 0.0
    for p in parts:
        v = float(p)
        if v < 0:
            raise ValueError(text)
        secs = secs * 60 + v
    return secs


def read_segments(path: str | Path) -> list[tuple[int, float, float, str]]:
    """``start,end,label`` rows (seconds, ``MM:SS.fff`` or ``HH:MM:SS.fff``) -> (line, start, end, label).

    Raises:
        InputError: the file is missing or unreadable.
        DataError: a time does not parse, end <= start, or a label is not a usable folder name.
    """
    path = Path(path)
    out = []
    for n, cells in _rows(path, ("start", "end", "label"), 3):
        try:
            start, end = parse_time(cells[0]), parse_time(cells[1])
        except ValueError:
            raise DataError(f"{path}:{n}: start/end {cells[0]!r}, {cells[1]!r}: not times (seconds, MM:SS.fff or "
                            "HH:MM:SS.fff)") from None
        if end <= start:
            raise DataError(f"{path}:{n}: end {cells[1]} is not after start {cells[0]}")
        _check_label(path, n, cells[2])
        out.append((n, start, end, cells[2]))
    return out


def from_recording(video: str | Path, annotations: str | Path, out: str | Path, codec: str = "mjpg") -> dict[str, Any]:
    """Cut ``video`` into ``out/<label>/<stem>-<start ms>-<end ms>.avi`` by ``start,end,label`` rows.

    Segments may overlap; each is written at the recording's frame rate.
    Raises:
        InputError: the video or the CSV is missing or unreadable.
        DataError: a row's times do not parse, end <= start, the row lies past the recording's end,
            or a label is not a usable folder name.
    """
    video, ann, out = Path(video), Path(annotations), Path(out)
    if not video.is_file():
        raise InputError(f"video {video}: no such file")
    cap = cv2.VideoCapture(str(video))
    opened = cap.isOpened()
    fps = (cap.get(cv2.CAP_PROP_FPS) or 0.0) if opened else 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if opened else 0
    cap.release()
    if not opened:
        raise InputError(f"video {video}: cannot be opened (not a video OpenCV can read)")
    if fps <= 0:
        raise DataError(f"video {video}: no frame rate in the file; cannot place times in it")
    duration = count / fps if count > 0 else None
    segs = []
    for n, start, end, label in read_segments(ann):
        if duration is not None and start >= duration:
            raise DataError(f"{ann}:{n}: start {start:g} is past the end of {video.name} ({duration:.2f} s)")
        cells = (f"{start:g}", f"{end:g}", label)
        # frame i shows time i / fps; a segment holds the frames with start <= i / fps < end
        first, stop = math.ceil(start * fps - 1e-6), math.ceil(end * fps - 1e-6)
        if stop <= first:
            raise DataError(f"{ann}:{n}: {cells[0]}..{cells[1]} is shorter than one frame at {fps:g} fps")
        segs.append({"line": n, "start": start, "end": end, "label": cells[2], "first": first, "stop": stop,
                     "writer": None, "frames": 0})
    cap = cv2.VideoCapture(str(video))
    fourcc, suffix = ("MJPG", ".avi") if codec == "mjpg" else ("mp4v", ".mp4")
    last = max(s["stop"] for s in segs)
    index = 0
    try:
        while index < last:
            ok, frame = cap.read()
            if not ok:
                break
            for s in segs:
                if s["first"] <= index < s["stop"]:
                    if s["writer"] is None:
                        stem = f"{video.stem}-{int(s['start'] * 1000):08d}-{int(s['end'] * 1000):08d}"
                        path = out / s["label"] / f"{stem}{suffix}"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        h, w = frame.shape[:2]
                        s["path"] = path
                        s["writer"] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
                        if not s["writer"].isOpened():
                            raise InputError(f"{path}: OpenCV cannot write {codec} there")
                    s["writer"].write(frame)
                    s["frames"] += 1
                elif index >= s["stop"] and s["writer"]:
                    s["writer"].release()
                    s["writer"] = False
            index += 1
    finally:
        cap.release()
        for s in segs:
            if s["writer"]:
                s["writer"].release()
    empty = [s for s in segs if s["frames"] == 0]
    if empty:
        raise DataError(f"{ann}:{empty[0]['line']}: no frame of {video.name} falls in {empty[0]['start']:g}..."
                        f"{empty[0]['end']:g} s (the recording has {index} frames at {fps:g} fps)")
    counts: dict[str, int] = {}
    for s in segs:
        counts[s["label"]] = counts.get(s["label"], 0) + 1
    return {"out": str(out), "clips": len(segs), "fps": fps, "frames": sum(s["frames"] for s in segs),
            "per_label": counts}
