"""The library: the dataset's classes and clips, the spool as a review queue, the recordings.

The spool may hold thousands of clips: sidecars are parsed once and remembered by (name, size, mtime),
so listing again costs one ``scandir`` per camera folder. Uncertainty: the margin between the two
highest mean per-frame scores of a clip (its sidecar's ``scores``); smallest first.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from edge.data.dataset import VIDEO_EXTS
from edge.data.fieldclips import CLIP_SUFFIXES, LABEL_RE
from edge.errors import EdgeError
from edge.studio.settings import StudioError, StudioSettings

logger = logging.getLogger(__name__)

MIN_CLIPS = 3          # fewer per class: a warning (teach's cross-validation needs a few)
MAX_RATIO = 3.0        # the largest class over the smallest: a warning above this


def check_label(name: Any, what: str = "label") -> str:
    """A class name usable as a dataset folder; 400 otherwise."""
    if not isinstance(name, str) or not LABEL_RE.match(name):
        raise StudioError(400, f"{what} {str(name)[:80]!r}: not a usable class name (letters, digits, _ . -; "
                               "first a letter or digit; at most 64)")
    return name


def dataset_labels(root: Path) -> list[str]:
    """The dataset's labels: ``labels.txt`` if there, else its label folders (as load_dataset reads them)."""
    lt = root / "labels.txt"
    if lt.is_file():
        return [ln.strip() for ln in lt.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _inside(p, root))


def _inside(p: Path, root: Path) -> bool:
    """``p`` is still under ``root`` once links are followed (a link out is not listed: it could not be opened)."""
    return p.resolve().is_relative_to(root.resolve())


def dataset_summary(s: StudioSettings) -> dict[str, Any] | None:
    """Classes with clip counts and balance warnings (None without --data); an unreadable folder: ``error``."""
    if "data" not in s.folders:
        return None
    root = s.folders["data"]
    try:
        labels = dataset_labels(root)
        counts = {name: len(_clips_of(root / name, root)) for name in labels}
    except (OSError, UnicodeDecodeError, EdgeError) as e:
        return {"classes": [], "total": 0, "warnings": [], "error": f"dataset {root}: cannot read ({e})"}
    warnings = [f"class {n} has {c} clip{'s' if c != 1 else ''} (teach needs at least {MIN_CLIPS} per class)"
                for n, c in counts.items() if c < MIN_CLIPS]
    full = {n: c for n, c in counts.items() if c > 0}
    if len(full) > 1:
        big, small = max(full, key=full.get), min(full, key=full.get)
        if full[big] > MAX_RATIO * full[small]:
            warnings.append(f"classes unbalanced: {big} has {full[big]} clips, {small} {full[small]} "
                            f"(more than {MAX_RATIO:g}x)")
    return {"classes": [{"name": n, "clips": c} for n, c in counts.items()], "total": sum(counts.values()),
            "warnings": warnings, "error": None}


def _clips_of(folder: Path, root: Path) -> list[os.DirEntry]:
    if not _inside(folder, root):
        return []
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if e.name.lower().endswith(VIDEO_EXTS) and not e.name.startswith(".")
                           and e.is_file() and (not e.is_symlink() or _inside(Path(e.path), root))),
                          key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def dataset_clips(s: StudioSettings, label: str | None, offset: int, limit: int) -> dict[str, Any]:
    root = s.folder("data")
    labels = [check_label(label)] if label else dataset_labels(root)
    items = []
    for name in labels:
        for e in _clips_of(root / name, root):
            items.append({"path": f"data/{name}/{e.name}", "label": name, "bytes": e.stat().st_size})
    return {"total": len(items), "offset": offset, "items": items[offset:offset + limit]}


def classes(s: StudioSettings, model_labels: list[str]) -> list[str]:
    """What the number keys offer: the dataset's labels, the page's new classes, the model's others."""
    out: list[str] = []
    if "data" in s.folders:
        try:
            out += dataset_labels(s.folders["data"])
        except (OSError, UnicodeDecodeError):
            pass
    out += read_extra_classes(s)
    out += model_labels
    return list(dict.fromkeys(out))


def read_extra_classes(s: StudioSettings) -> list[str]:
    p = s.folder("work") / "classes.txt"
    try:
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if LABEL_RE.match(ln.strip())]
    except FileNotFoundError:
        return []


def recordings(s: StudioSettings) -> list[dict[str, Any]]:
    if "recordings" not in s.folders:
        return []
    root = s.folders["recordings"]
    out = []
    for p in sorted(root.rglob("*")):
        hidden = any(x.startswith(".") for x in p.relative_to(root).parts)
        if p.suffix.lower() in VIDEO_EXTS and p.is_file() and not hidden:
            ann = p.with_suffix(".csv")
            rel = p.relative_to(root).as_posix()
            n = None
            if ann.is_file():
                try:
                    n = sum(1 for ln in ann.read_text(encoding="utf-8").splitlines()[1:] if ln.strip())
                except (OSError, UnicodeDecodeError):
                    n = None
            out.append({"path": f"recordings/{rel}", "annotations": f"recordings/{ann.relative_to(root).as_posix()}"
                        if ann.is_file() else None, "segments": n})
    return out


class SpoolIndex:
    """The spool's clips, each summarised from its sidecar once (re-read when its size or mtime change).

    ``store``: a file the summaries are kept in between runs (the work folder's ``.spool-index.json``), so
    a restarted studio does not parse thousands of sidecars again.
    """

    def __init__(self, store: Path | None = None) -> None:
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._store = store
        if store is not None:
            try:
                with open(store, "rb") as f:
                    kept = json.loads(f.read())
                self._cache = {k: ((v[0], v[1]), v[2]) for k, v in kept.items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
                logger.warning("spool index %s unreadable (%s); sidecars read again", store, e)

    def clips(self, root: Path) -> list[dict[str, Any]]:
        """Every complete clip (video + sidecar), unordered; unreadable sidecars are logged once and left out."""
        out, seen, parsed = [], set(), 0
        try:
            cams = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        except OSError as e:
            raise StudioError(422, f"spool {root}: cannot read ({e.strerror or e})") from None
        for cam in cams:
            try:
                with os.scandir(cam.path) as it:
                    entries = {e.name: e for e in it if not e.name.startswith(".")}
            except OSError:
                continue
            for name, e in entries.items():
                if not name.endswith(".json"):
                    continue
                stem = name[:-5]
                video = next((stem + suf for suf in CLIP_SUFFIXES if stem + suf in entries), None)
                if video is None:
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = f"{cam.name}/{video}"
                seen.add(key)
                sig = (st.st_size, st.st_mtime_ns)
                with self._lock:
                    hit = self._cache.get(key)
                if hit is None or hit[0] != sig:
                    hit = (sig, _summary(e.path, key))
                    parsed += 1
                    with self._lock:
                        self._cache[key] = hit
                if hit[1] is not None:
                    out.append(hit[1])
        with self._lock:
            gone = set(self._cache) - seen
            for k in gone:
                del self._cache[k]
            if self._store is not None and (parsed or gone):
                self._save()
        return out

    def _save(self) -> None:
        from edge.util import atomic_write
        data = {k: [sig[0], sig[1], summary] for k, (sig, summary) in self._cache.items()}
        try:
            atomic_write(self._store, json.dumps(data, separators=(",", ":")), mode=0o644)
        except OSError as e:
            logger.warning("spool index %s: cannot write (%s)", self._store, e.strerror or e)


def _summary(side: str, clip: str) -> dict[str, Any] | None:
    try:
        with open(side, "rb") as f:
            m = json.loads(f.read())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        logger.warning("spool: sidecar %s unreadable (%s); clip left out", side, e)
        return None
    score = m.get("predicted_score")
    second, margin = _margin(m.get("labels"), m.get("scores"))
    return {"path": f"spool/{clip}", "clip": clip, "camera": m.get("camera"), "trigger": m.get("trigger"),
            "start_ts": m.get("start_ts") or "", "duration_s": m.get("duration_s"), "frames": m.get("frames"),
            "fps": m.get("fps"), "predicted": m.get("predicted"), "score": score, "second": second,
            "margin": margin if margin is not None else (score if isinstance(score, (int, float)) else 1.0)}


def _margin(labels: Any, scores: Any) -> tuple[str | None, float | None]:
    """The runner-up label and the margin between the two highest mean per-frame scores (plain Python:
    for a few frames of a few labels it is several times faster than numpy)."""
    try:
        probs = scores.get("probs") if isinstance(scores, dict) else None
        if not probs or not isinstance(labels, list) or len(labels) < 2:
            return None, None
        k = len(labels)
        sums = [0.0] * k
        for row in probs:
            if len(row) != k:
                return None, None
            for j in range(k):
                sums[j] += row[j]
        order = sorted(range(k), key=sums.__getitem__, reverse=True)
        return labels[order[1]], round((sums[order[0]] - sums[order[1]]) / len(probs), 4)
    except (TypeError, ValueError, AttributeError):
        return None, None


ORDERS = {"uncertain": (lambda c: (c["margin"], c["clip"]), False),
          "newest": (lambda c: (c["start_ts"], c["clip"]), True),
          "oldest": (lambda c: (c["start_ts"], c["clip"]), False)}


def spool_page(index: SpoolIndex, s: StudioSettings, labels: dict[str, str], order: str, show: str,
               offset: int, limit: int) -> dict[str, Any]:
    if order not in ORDERS:
        raise StudioError(400, f"order {order!r}: expected {', '.join(ORDERS)}")
    if show not in ("unlabelled", "labelled", "all"):
        raise StudioError(400, f"show {show!r}: expected unlabelled, labelled or all")
    clips = index.clips(s.folder("spool"))
    if show != "all":
        want = show == "labelled"
        clips = [c for c in clips if (c["clip"] in labels) == want]
    key, rev = ORDERS[order]
    clips.sort(key=key, reverse=rev)
    return {"total": len(clips), "offset": offset,
            "items": [{**c, "label": labels.get(c["clip"])} for c in clips[offset:offset + limit]]}
