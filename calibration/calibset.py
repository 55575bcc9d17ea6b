"""Calibration sets on disk: short frame sequences kept in temporal order, plus a manifest.

Layout of a set folder::

    DIR/calib.json          manifest (format, graph_fps, segments, summary)
    DIR/seg_00000.npz       one segment: ``frames``, uint8, N x H x W x 3, BGR, in temporal order

A segment holds the frames the graph sees (every ``step``-th frame of its source, i.e. frames at the
bundle's graph rate ``graph_fps`` = ``temporal.fps / temporal.frame_stride``), so a reader
steps the online graph through it frame by frame and the state tensors are the ones a real sequence
produces. Frames are raw camera frames (possibly downscaled, see the manifest): they are turned into
graph inputs by the runtime's own :class:`edge.preprocess.Preprocessor` at quantization time.
"""
from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import DataError, InputError

logger = logging.getLogger(__name__)

MANIFEST = "calib.json"
FORMAT = 1
KIND = "edge-tsm-calibration"


@dataclass(frozen=True)
class SegmentRef:
    """One segment of a set: its file, its frame count and where it came from."""

    file: str
    frames: int
    source: str
    start: int          # index of its first frame in the source, in source frames
    step: int           # source frames between two of its frames
    score: float        # frame-difference score of its keyframe (0: a static or rendered segment)


@dataclass(frozen=True)
class CalibrationSet:
    """A loaded manifest; :meth:`segments_frames` reads the frames lazily."""

    root: Path
    graph_fps: float
    segments: list[SegmentRef]
    summary: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return sum(s.frames for s in self.segments)

    def read_segment(self, ref: SegmentRef) -> np.ndarray:
        """The frames of ``ref`` (N x H x W x 3 uint8 BGR).

        Raises:
            InputError: the file is missing.
            DataError: it is not a readable .npz, or its frames are not N x H x W x 3 uint8.
        """
        path = self.root / ref.file
        if not path.is_file():
            raise InputError(f"calibration set {self.root}: segment {ref.file} listed in {MANIFEST} not found")
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "frames" not in npz.files:
                    raise DataError(f"calibration segment {path}: no 'frames' array (has: "
                                    f"{', '.join(npz.files) or 'nothing'})")
                frames = npz["frames"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"calibration segment {path}: not a readable .npz ({' '.join(str(e).split())})") from None
        _check_frames(path, ref, frames.dtype, frames.shape)
        return frames

    def check(self) -> None:
        """Check every segment file's array header (not its pixels): fail early, before any engine work.

        Raises:
            InputError: a segment file is missing.
            DataError: a file is not an .npz of N x H x W x 3 uint8 frames, or its count disagrees.
        """
        for ref in self.segments:
            path = self.root / ref.file
            if not path.is_file():
                raise InputError(f"calibration set {self.root}: segment {ref.file} listed in {MANIFEST} not found")
            try:
                with zipfile.ZipFile(path) as zf, zf.open("frames.npy") as f:
                    version = np.lib.format.read_magic(f)
                    header = {(1, 0): np.lib.format.read_array_header_1_0,
                              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if header is None:
                        raise ValueError(f"unsupported .npy format version {version}")
                    shape, _, dtype = header(f)
            except KeyError:
                raise DataError(f"calibration segment {path}: no 'frames' array") from None
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                why = " ".join(str(e).split())
                raise DataError(f"calibration segment {path}: not a readable .npz ({why})") from None
            _check_frames(path, ref, dtype, shape)

    def segments_frames(self) -> Iterator[tuple[SegmentRef, np.ndarray]]:
        for ref in self.segments:
            yield ref, self.read_segment(ref)


def _check_frames(path: Path, ref: SegmentRef, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or shape[0] < 1:
        raise DataError(f"calibration segment {path}: expected frames of N x H x W x 3 uint8 (BGR), got "
                        f"{dtype} {list(shape)}")
    if shape[0] != ref.frames:
        raise DataError(f"calibration segment {path}: {shape[0]} frames, {MANIFEST} says {ref.frames}")


def segment_name(i: int) -> str:
    return f"seg_{i:05d}.npz"


def write_segment(root: Path, i: int, frames: np.ndarray) -> tuple[str, int]:
    """Write ``frames`` (N x H x W x 3 uint8) as segment ``i``; return (file name, bytes).

    Raises:
        InputError: the file cannot be written.
    """
    name = segment_name(i)
    try:
        np.savez_compressed(root / name, frames=np.ascontiguousarray(frames, np.uint8))
        return name, (root / name).stat().st_size
    except OSError as e:
        raise InputError(f"calibration set {root}: cannot write {name} ({e})") from None


def write_manifest(root: Path, graph_fps: float, segments: list[SegmentRef], summary: dict[str, Any]) -> Path:
    """Write ``calib.json``: the list of segments and the summary of how they were chosen.

    Raises:
        InputError: the file cannot be written.
    """
    doc = {"format": FORMAT, "kind": KIND, "graph_fps": float(graph_fps),
           "segments": [vars(s) for s in segments], "summary": summary}
    path = root / MANIFEST
    try:
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise InputError(f"calibration set {root}: cannot write {MANIFEST} ({e})") from None
    return path


def load_calibration_set(path: str | Path) -> CalibrationSet:
    """Read and check a set's manifest (the segment files are read later, one at a time).

    Raises:
        InputError: the folder or its calib.json is missing or unreadable.
        DataError: the manifest is malformed or lists no frames.
    """
    root = Path(path)
    hint = "make one with: edge-tsm calibrate collect --from VIDEO --out DIR (or --synth)"
    if not root.is_dir():
        raise InputError(f"calibration set {root}: no such folder ({hint})")
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise InputError(f"calibration set {root}: no {MANIFEST} in this folder ({hint})")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"calibration set {root}: cannot read {MANIFEST} ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"calibration set {root}: {MANIFEST} is not valid JSON ({e})") from None
    where = f"calibration set {root}: {MANIFEST}"
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("format") != FORMAT:
        raise DataError(f"{where}: expected kind {KIND!r} format {FORMAT}, got "
                        f"{doc.get('kind') if isinstance(doc, dict) else type(doc).__name__!r}")
    fps, raw = doc.get("graph_fps"), doc.get("segments")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
        raise DataError(f"{where}: graph_fps: expected a positive number, got {fps!r}")
    if not isinstance(raw, list):
        raise DataError(f"{where}: segments: expected a list, got {type(raw).__name__}")
    segments = []
    for i, s in enumerate(raw):
        try:
            ref = SegmentRef(str(s["file"]), int(s["frames"]), str(s.get("source", "?")), int(s.get("start", 0)),
                             int(s.get("step", 1)), float(s.get("score", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: segments[{i}]: expected file and frames, got {s!r} ({e})") from None
        if ref.frames < 1 or Path(ref.file).name != ref.file:
            raise DataError(f"{where}: segments[{i}]: expected a file name in the set and frames >= 1, got {s!r}")
        segments.append(ref)
    if not segments:
        raise DataError(f"calibration set {root}: empty (no segments in {MANIFEST}); collect from recordings "
                        "with motion, or raise --max-frames")
    summary = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    return CalibrationSet(root.resolve(), float(fps), segments, summary)
