"""Video datasets in the ``ROOT/<label>/*.mp4`` layout, read without torch.

Layout: one folder per label holding video files (``.mp4``, ``.avi``, ``.mkv``, ``.mov``).
Optional files in ROOT:

* ``labels.txt``: one label per line, fixing the label order (else: folder names, sorted);
* ``train.txt``, ``val.txt``, ``test.txt`` (any ``<split>.txt``): one clip per line, as a path
  relative to ROOT (``swipe_left/clip_00001.mp4``), selecting a split.
* ``recordings/``: continuous recordings (``*.mp4``, ``*.avi``, ...), each with its annotations beside it
  (``NAME.csv``: ``start,end,label`` rows, the format ``eval-events`` reads). Training takes windows of
  them labelled frame by frame (motions starting and ending inside the window, as the camera shows them);
  frames no row covers are not scored. ``recordings`` is therefore not a label name.

Also the temporally consistent augmentation used for training: one crop, flip and colour jitter
drawn per clip and applied to all its frames; a horizontal flip swaps left/right labels and the
rotation direction, a vertical flip swaps up/down labels and the rotation direction.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import DataError, InputError

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int


@dataclass(frozen=True)
class Recording:
    """A continuous recording and its annotated spans: ``(first, stop, label)`` frame indices (stop exclusive)."""
    path: Path
    spans: tuple[tuple[int, int, int], ...]
    fps: float

    @property
    def frames(self) -> int:
        """Frames up to the end of the last annotated span."""
        return max(stop for _, stop, _ in self.spans)

    def frame_labels(self, n: int) -> np.ndarray:
        """Label index of each of the first ``n`` frames (-1: no row covers it; a later row wins)."""
        out = np.full(n, -1, np.int64)
        for first, stop, label in self.spans:
            out[first:min(stop, n)] = label
        return out

    def windows(self, frames: int, stride: int) -> int:
        """How many windows of ``frames`` frames at ``stride`` this recording gives a training epoch: one per
        window span it holds, at least one."""
        return max(1, self.frames // ((frames - 1) * stride + 1))


RECORDINGS = "recordings"


@dataclass
class VideoDataset:
    root: Path
    labels: list[str]
    clips: list[Clip] = field(default_factory=list)
    recordings: list[Recording] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in self.labels}
        for c in self.clips:
            out[self.labels[c.label]] += 1
        return out


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def load_dataset(root: str | Path, split: str | None = None, labels: list[str] | None = None) -> VideoDataset:
    """List the clips of a dataset folder.

    ``labels`` (e.g. a model's) fixes the label order; a label folder outside it is an error.
    Raises:
        InputError: ROOT or a split file is missing.
        DataError: no label folders, no clips, or a clip whose label is unknown.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset {root}: not a folder (expected ROOT/<label>/*.mp4)")
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != RECORDINGS)
    if labels is None:
        labels = _read_lines(root / "labels.txt") if (root / "labels.txt").is_file() else dirs
    if not labels:
        raise DataError(f"dataset {root}: no label folders (expected ROOT/<label>/*.mp4)")
    index = {name: i for i, name in enumerate(labels)}
    if split is not None:
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            raise InputError(f"dataset {root}: split file {split_file.name} not found")
        rels = _read_lines(split_file)
    else:   # strings and os.scandir, not Path objects per entry: a 100k-clip index lists in about a second
        rels = []
        for d in dirs:
            with os.scandir(root / d) as it:
                names = sorted(e.name for e in it if e.name.lower().endswith(VIDEO_EXTS))
            rels += [f"{d}/{n}" for n in names]
    clips = []
    base = str(root)
    for rel in rels:
        rel = rel[2:] if rel.startswith("./") else rel
        label = rel.split("/", 1)[0] if "/" in rel.strip("/") else ""
        if label not in index:
            raise DataError(f"dataset {root}: clip {rel} has label {label!r}, not one of the "
                            f"{len(labels)} labels ({', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})")
        clips.append(Clip(Path(base, rel), index[label]))
    recordings = load_recordings(root / RECORDINGS, index) if split is None and (root / RECORDINGS).is_dir() else []
    if not clips and not recordings:
        raise DataError(f"dataset {root}: no video clips ({'/'.join(VIDEO_EXTS)}) in the label folders"
                        + (f" of split {split}" if split else ""))
    return VideoDataset(root, list(labels), clips, recordings)


def load_recordings(folder: Path, index: dict[str, int]) -> list[Recording]:
    """The recordings of ``folder`` with their ``NAME.csv`` annotations (frame spans at each video's rate).

    Raises:
        DataError: a recording without its CSV, a row whose label is not one of ``index``, a video without a
            frame rate, or a row that covers no frame.
        InputError: a CSV that cannot be read.
    """
    from edge.data.fieldclips import read_segments
    out = []
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.name.lower().endswith(VIDEO_EXTS))
    for name in names:
        path = folder / name
        ann = path.with_suffix(".csv")
        if not ann.is_file():
            raise DataError(f"recording {path}: no annotations {ann.name} beside it (start,end,label rows)")
        cap = cv2.VideoCapture(str(path))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        cap.release()
        if fps <= 0:
            raise DataError(f"recording {path}: no frame rate in the file; cannot place its annotations")
        spans = []
        for n, start, end, label in read_segments(ann):
            if label not in index:
                raise DataError(f"{ann}:{n}: label {label!r} is not one of the dataset's {len(index)} labels "
                                f"({', '.join(list(index)[:10])}{', ...' if len(index) > 10 else ''})")
            first, stop = int(np.ceil(start * fps - 1e-6)), int(np.ceil(end * fps - 1e-6))
            if stop <= first:
                raise DataError(f"{ann}:{n}: {start:g}..{end:g} s covers no frame at {fps:g} fps")
            spans.append((first, stop, index[label]))
        if spans:
            out.append(Recording(path, tuple(spans), fps))
    return out


def read_video(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a whole video file into a T x H x W x 3 uint8 array (BGR).

    Raises:
        InputError: the file is missing, cannot be opened, holds no frame or its frames change size.
    """
    return _decode(Path(path), 0, max_frames, "")


def read_span(path: str | Path, first: int, stop: int) -> np.ndarray:
    """Frames ``first`` to ``stop`` (exclusive) of a video, seeking to ``first`` rather than decoding what is
    before it (a window of a long recording). Fewer frames where the video ends sooner.

    Raises:
        InputError: the file is missing, cannot be opened or holds no frame from ``first`` on.
    """
    return _decode(Path(path), first, stop - first, f" from frame {first}")


def _decode(path: Path, first: int, count: int | None, where: str) -> np.ndarray:
    """``count`` frames (None: all) from frame ``first`` on (seeking to it); errors name ``path`` (and ``where``)."""
    if not path.is_file():
        raise InputError(f"video {path}: no such file")
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        if first > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        while count is None or len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise InputError(f"video {path}: cannot be decoded{where} (no frame read)")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise InputError(f"video {path}: its frames change size ({', '.join(str(s) for s in sorted(shapes))})")
    return np.stack(frames)


def video_fps(path: str | Path, default: float = 15.0) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return float(fps) if fps and fps > 0 else default


_HFLIP_TOKENS = (("left", "right"), ("ccw", "cw"), ("counterclockwise", "clockwise"))
_VFLIP_TOKENS = (("up", "down"), ("ccw", "cw"), ("counterclockwise", "clockwise"))


def _swap_tokens(name: str, pairs: tuple[tuple[str, str], ...]) -> str | None:
    """The label a mirror turns ``name`` into; ``None`` when it has a direction without a partner."""
    tokens = re.split(r"([_\s-]+)", name)
    out = []
    for tok in tokens:
        low = tok.lower()
        for a, b in pairs:
            if low == a:
                tok = b if tok.islower() else b.capitalize()
                break
            if low == b:
                tok = a if tok.islower() else a.capitalize()
                break
        out.append(tok)
    return "".join(out)


def flip_permutation(labels: list[str], vertical: bool = False) -> list[int] | None:
    """Label index map for a mirror, or ``None`` when some label's mirrored partner is missing."""
    pairs = _VFLIP_TOKENS if vertical else _HFLIP_TOKENS
    index = {name: i for i, name in enumerate(labels)}
    perm = []
    for name in labels:
        other = _swap_tokens(name, pairs)
        if other not in index:
            return None
        perm.append(index[other])
    return perm


@dataclass
class ClipAugment:
    """Per-clip random crop (scale and position), flips and colour jitter; same for every frame."""

    size: tuple[int, int]                  # H, W of the network input
    labels: list[str]
    resize: str = "stretch"                # stretch: crops of the whole frame; short_side_crop: square crops
    scale_range: tuple[float, float] = (0.8, 1.0)
    hflip: bool = True
    vflip: bool = True
    jitter: float = 0.25

    def __post_init__(self) -> None:
        self.hperm = flip_permutation(self.labels) if self.hflip else None
        self.vperm = flip_permutation(self.labels, vertical=True) if self.vflip else None

    def __call__(self, frames: np.ndarray, label: Any, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        """frames: T x H x W x 3 uint8 BGR -> (T x H' x W' x 3 uint8 RGB at ``size``, new label). ``label``: an
        index, or an array of them (one per frame; negative: none, kept)."""
        t, h, w = frames.shape[:3]
        scale = rng.uniform(*self.scale_range)
        aspect = np.exp(rng.uniform(-0.1, 0.1))
        if self.resize == "stretch":
            ch, cw = min(h, h * scale * aspect), min(w, w * scale / aspect)
        else:
            side = min(h, w) * scale
            ch, cw = min(h, side * aspect), min(w, side / aspect)
        y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
        # One affine map per clip: crop + resize in a single warp per frame.
        sx, sy = self.size[1] / cw, self.size[0] / ch
        m = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], dtype=np.float32)
        if self.hperm is not None and rng.random() < 0.5:
            m[0] = -m[0]
            m[0, 2] += self.size[1] - 1
            label = _permuted(self.hperm, label)
        if self.vperm is not None and rng.random() < 0.25:
            m[1] = -m[1]
            m[1, 2] += self.size[0] - 1
            label = _permuted(self.vperm, label)
        gain = 1.0 + rng.uniform(-self.jitter, self.jitter, size=3) * np.array([1.0, 0.3, 0.3])
        bias = rng.uniform(-self.jitter, self.jitter) * 64.0
        # Per-channel gain (in RGB order) and brightness bias as one lookup table, applied to BGR frames.
        lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * gain[None, ::-1] + bias, 0, 255)
        lut = lut.astype(np.uint8).reshape(256, 1, 3)
        out = np.empty((t, self.size[0], self.size[1], 3), np.uint8)
        for i in range(t):
            warped = cv2.warpAffine(frames[i], m, (self.size[1], self.size[0]), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
            out[i] = cv2.LUT(warped, lut)[:, :, ::-1]
        return out, label


def _permuted(perm: list[int], label: Any) -> Any:
    if isinstance(label, np.ndarray):
        return np.where(label >= 0, np.asarray(perm)[np.maximum(label, 0)], label)
    return perm[label]


def center_crop_frames(frames: np.ndarray, size: tuple[int, int], crop_scale: float = 1.0,
                       resize: str = "short_side_crop") -> np.ndarray:
    """Deterministic eval transform, BGR -> RGB: ``stretch`` resizes the whole frame to ``size``;
    ``short_side_crop`` resizes the short side to size/crop_scale and takes the centre crop."""
    t, h, w = frames.shape[:3]
    if resize == "stretch":
        return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)[:, :, ::-1] for f in frames])
    s = min(size) / crop_scale / min(h, w)
    rh, rw = max(size[0], round(h * s)), max(size[1], round(w * s))
    y0, x0 = (rh - size[0]) // 2, (rw - size[1]) // 2
    out = np.empty((t, size[0], size[1], 3), np.uint8)
    for i in range(t):
        r = cv2.resize(frames[i], (rw, rh), interpolation=cv2.INTER_AREA)
        out[i] = r[y0:y0 + size[0], x0:x0 + size[1], ::-1]
    return out
