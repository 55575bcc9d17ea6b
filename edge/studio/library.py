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
import time
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

    A camera folder whose mtime has not changed is not listed again: the daemon writes a clip's video and
    sidecar under hidden names and renames them, and its quota deletes, so every change it makes touches the
    folder. A folder changed less than ``RACY_S`` before it was listed is listed again next time (a change in
    the same clock tick would not move its mtime), and every ``VERIFY_S`` each sidecar is stat'ed again (a
    sidecar edited in place by hand). Sorted orders are kept until the listing changes.

    ``store``: a file the summaries are kept in between runs (the work folder's ``.spool-index.json``), so
    a restarted studio does not parse thousands of sidecars again.
    """

    RACY_S = 2.0
    VERIFY_S = 30.0

    def __init__(self, store: Path | None = None) -> None:
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any] | None]] = {}
        # camera folder -> (its (inode, mtime_ns) when listed and trusted, else None; its clips' summaries;
        # the keys of every clip with a sidecar there, unreadable ones included)
        self._cams: dict[str, tuple[tuple[int, int] | None, list[dict[str, Any]], set[str]]] = {}
        self._root: Path | None = None
        self._verified = 0.0            # time.monotonic() of the last listing that stat'ed every sidecar
        self._generation = 0            # bumped whenever the listing may have changed
        self._sorted: dict[str, tuple[int, list[dict[str, Any]]]] = {}
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
        with self._lock:
            self._refresh(root)
            return [c for cam in self._cams.values() for c in cam[1]]

    def ordered(self, root: Path, order: str) -> list[dict[str, Any]]:
        """Every clip in one of :data:`ORDERS` (kept until the listing changes; do not modify it)."""
        key, rev = ORDERS[order]
        with self._lock:
            self._refresh(root)
            hit = self._sorted.get(order)
            if hit is None or hit[0] != self._generation:
                hit = (self._generation, sorted((c for cam in self._cams.values() for c in cam[1]),
                                                key=key, reverse=rev))
                self._sorted[order] = hit
            return hit[1]

    def _refresh(self, root: Path) -> None:
        """Lists the camera folders that changed (under the lock)."""
        now = time.time_ns()
        verify = time.monotonic() - self._verified > self.VERIFY_S or root != self._root
        if root != self._root:
            self._cams, self._root = {}, root
        try:
            with os.scandir(root) as it:
                cams = [e for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        except OSError as e:
            raise StudioError(422, f"spool {root}: cannot read ({e.strerror or e})") from None
        changed, parsed = False, 0
        names = {c.name for c in cams}
        for gone in set(self._cams) - names:
            del self._cams[gone]
            changed = True
        for cam in cams:
            try:
                st = cam.stat(follow_symlinks=False)
            except OSError:
                continue
            sig = (st.st_ino, st.st_mtime_ns)
            kept = self._cams.get(cam.name)
            if kept is not None and kept[0] == sig and not verify:
                continue
            items, keys, n = self._list(cam)
            parsed += n
            trusted = sig if now - st.st_mtime_ns > self.RACY_S * 1e9 else None
            if kept is None or kept[2] != keys or n:
                changed = True
            self._cams[cam.name] = (trusted, items, keys)
        if verify:
            self._verified = time.monotonic()
        if changed:
            self._generation += 1
            seen = set().union(*(cam[2] for cam in self._cams.values()))
            gone = [k for k in self._cache if k not in seen]
            for k in gone:
                del self._cache[k]
            if self._store is not None and (parsed or gone):
                self._save()

    def _list(self, cam: os.DirEntry) -> tuple[list[dict[str, Any]], set[str], int]:
        """The clips of one camera folder (and the keys of all, unreadable ones too): one stat per sidecar,
        parsed when new or changed."""
        out, keys, parsed = [], set(), 0
        try:
            with os.scandir(cam.path) as it:
                entries = {e.name: e for e in it if not e.name.startswith(".")}
        except OSError:
            return out, keys, 0
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
            keys.add(key)
            sig = (st.st_size, st.st_mtime_ns)
            hit = self._cache.get(key)
            if hit is None or hit[0] != sig:
                hit = (sig, _summary(e.path, key))
                parsed += 1
                self._cache[key] = hit
            if hit[1] is not None:
                out.append(hit[1])
        return out, keys, parsed

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
    clips = index.ordered(s.folder("spool"), order)
    if show != "all":
        want = show == "labelled"
        clips = [c for c in clips if (c["clip"] in labels) == want]
    return {"total": len(clips), "offset": offset,
            "items": [{**c, "label": labels.get(c["clip"])} for c in clips[offset:offset + limit]]}
