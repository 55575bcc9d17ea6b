"""The calibration data reader: graph feeds from real sequences, with the states they really produce.

An online TSM graph takes the frame and the state tensors (the shifted channels of the previous
frame). Calibrating with zero or random states would give the state inputs (and everything they
feed) ranges they never have in use. So :class:`SequenceReader` steps the FP32 graph through every
segment of a calibration set, starting from zero states as the runtime does after a reset, and hands
the calibrator each frame together with the states the previous frames of its segment produced.
Frames are preprocessed by the runtime's own :class:`edge.preprocess.Preprocessor`.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge.backends import create_backend
from edge.bundle import Bundle
from edge.calibration.calibset import CalibrationSet
from edge.calibration.progress import bar
from edge.errors import DataError
from edge.preprocess import Preprocessor

logger = logging.getLogger(__name__)


class SequenceReader(CalibrationDataReader):
    """All feeds of a calibration set, in order, each frame with its true states.

    The feeds are computed once at construction (one FP32 step per frame) and kept, so the reader
    can be rewound and sliced (``set_range``, used for chunked calibration) and reused by the
    debugging and checking passes; ``fp32_logits[i]`` is the FP32 output for ``feeds[i]``.
    """

    def __init__(self, bundle: Bundle, calib: CalibrationSet, *, threads: int | None = None,
                 progress: bool = False) -> None:
        """Raises:
            DataError: a segment's frames cannot be read or preprocessed.
            ModelError, DeviceError: the FP32 graph cannot be run.
        """
        self.feeds: list[dict[str, np.ndarray]] = []
        self.fp32_logits: list[np.ndarray] = []
        self.segment_starts: list[int] = []
        backend = create_backend("onnxruntime", bundle.graph_path("fp32"), threads=threads, precision_hint="f32")
        pre = Preprocessor(bundle.input)
        zeros = {s.input: np.zeros(s.shape, np.float32) for s in bundle.states}
        frames_bar = bar(None, enabled=progress, desc="stepping FP32 through the calibration set",
                         total=calib.num_frames)
        try:
            for ref, frames in calib.segments_frames():
                self.segment_starts.append(len(self.feeds))
                states = dict(zeros)
                for j, frame in enumerate(frames):
                    try:
                        x = pre(frame).copy()
                    except DataError as e:
                        raise DataError(f"calibration segment {calib.root / ref.file}, frame {j}: {e}") from None
                    feeds = {bundle.input.name: x, **states}
                    out = backend.run(feeds)
                    self.feeds.append(feeds)
                    self.fp32_logits.append(out[bundle.output_name].reshape(-1))
                    states = {s.input: out[s.output] for s in bundle.states}
                    frames_bar.update()
        finally:
            frames_bar.close()
            backend.close()
        self._start, self._end = 0, len(self.feeds)
        self._pos = 0
        self._progress = progress
        self._bar: Any = None
        self._served = 0
        logger.info("calibration feeds: %d frames in %d segments from %s", len(self.feeds),
                    len(self.segment_starts), calib.root)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve only feeds[start_index:end_index] (ONNX Runtime's chunked calibration calls this)."""
        self._start, self._end = start_index, min(end_index, len(self.feeds))
        self._pos = self._start

    def rewind(self) -> None:
        self._start, self._end, self._pos = 0, len(self.feeds), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        if self._bar is None:
            self._bar = bar(None, enabled=self._progress, desc="calibrating", total=len(self.feeds))
        feeds = self.feeds[self._pos]
        self._pos += 1
        self._served += 1
        self._bar.update()
        if self._served >= len(self.feeds):
            self.close_bar()
        return feeds

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class FeedList(CalibrationDataReader):
    """A fixed list of feeds as a reader (e.g. the first frames, for the debugging pass)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._feeds):
            return None
        self._pos += 1
        return self._feeds[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0
