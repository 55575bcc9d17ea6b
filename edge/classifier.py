"""Per-stream online classification: frame in, class probabilities out, state tensors fed back.

One :class:`OnlineClassifier` per camera: it owns the stream's state (the shifted features of past
frames, or for ``kind: clip`` bundles the window of past frames). Call :meth:`reset` after a gap in
the frames (a reconnect, a skipped stretch) so stale history does not leak into new scores.
"""
from __future__ import annotations

import logging

import numpy as np

from edge.backends import Backend
from edge.bundle import Bundle
from edge.errors import DataError, ModelError
from edge.preprocess import Preprocessor

logger = logging.getLogger(__name__)


class OnlineClassifier:
    """Steps a bundle's graph frame by frame on ``backend``.

    Online bundles: the feeds dict is built once; each step rebinds the state inputs to the state
    outputs just returned (the backend hands over fresh arrays and never writes into its inputs, so
    no copy is needed). Clip bundles: a ring of the last ``clip_frames`` preprocessed frames is run
    as a sliding window, padded with the first frame until full.
    """

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        """Raises: ModelError: the backend's graph does not have the bundle's inputs/outputs."""
        self.bundle = bundle
        self.backend = backend
        self.labels = list(bundle.labels)
        self.preprocess = Preprocessor(bundle.input)
        self._in = bundle.input.name
        self._out = bundle.output_name
        self._pairs = [(s.input, s.output) for s in bundle.states]
        h, w = bundle.input.size
        self._in_shape = (1, 3, h, w)
        needed_in = {self._in} | {s.input for s in bundle.states}
        needed_out = {self._out} | {s.output for s in bundle.states}
        missing = sorted(needed_in - set(backend.input_names)) + sorted(needed_out - set(backend.output_names))
        unfed = sorted(set(backend.input_names) - needed_in)
        if missing or unfed:
            raise ModelError(f"model {bundle.root}: the {backend.name} graph does not match model.yaml "
                             f"(missing: {', '.join(missing) or 'none'}; unfed inputs: {', '.join(unfed) or 'none'})")
        self._zeros = {s.input: np.zeros(s.shape, np.float32) for s in bundle.states}
        self._feeds: dict[str, np.ndarray] = {self._in: self.preprocess.out, **self._zeros}
        if bundle.kind == "clip":
            t = bundle.temporal.clip_frames
            self._ring = np.zeros((t, 3, h, w), np.float32)
            self._clip = np.zeros((1, t, 3, h, w), np.float32)
            self._feeds[self._in] = self._clip
            self._pos = 0
        self.frames = 0  # frames stepped since the last reset

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def reset(self) -> None:
        """Forget the past: zero states (online) or an empty window (clip)."""
        self._feeds.update(self._zeros)
        self.frames = 0

    def step(self, frame_bgr: np.ndarray) -> np.ndarray:
        """One camera frame (BGR uint8, any size) -> probabilities (float32, one per label).

        Raises:
            DataError: the frame is not an H x W x 3 uint8 image.
            ModelError: the inference failed.
        """
        return self.step_input(self.preprocess(frame_bgr))

    def step_input(self, x: np.ndarray) -> np.ndarray:
        """An already preprocessed input (1 x 3 x H x W float32) -> probabilities.

        Raises:
            DataError: ``x`` has the wrong shape or type.
            ModelError: the inference failed.
        """
        if x.shape != self._in_shape or x.dtype != np.float32:
            raise DataError(f"input {self._in!r}: expected float32 {list(self._in_shape)}, "
                            f"got {x.dtype} {list(x.shape)}")
        if self.bundle.kind == "clip":
            self._push(x)
        else:
            self._feeds[self._in] = x
        out = self.backend.run(self._feeds)
        for s_in, s_out in self._pairs:
            self._feeds[s_in] = out[s_out]
        self.frames += 1
        return _softmax(out[self._out])

    def _push(self, x: np.ndarray) -> None:
        """Put ``x`` in the ring and lay the window out oldest first in the clip input."""
        t = self._ring.shape[0]
        if self.frames == 0:
            self._ring[:] = x[0]  # pad with the first frame until the window is full
            self._pos = 0
        else:
            self._pos = (self._pos + 1) % t
            self._ring[self._pos] = x[0]
        p = self._pos + 1
        self._clip[0, :t - p] = self._ring[p:]
        self._clip[0, t - p:] = self._ring[:p]


def _softmax(logits: np.ndarray) -> np.ndarray:
    """A fresh float32 vector (the caller may keep it)."""
    z = logits.reshape(-1).astype(np.float32)
    z -= z.max()
    np.exp(z, out=z)
    z /= z.sum()
    return z


class BatchStepper:
    """Steps several cameras' :class:`OnlineClassifier` (one bundle) in one call of a backend that was
    compiled from the batched graph (:func:`edge.batching.batched_graph`): the frames and each state
    are stacked into per-batch-size buffers made once, and each classifier gets its rows of the new
    states back (views of the outputs, which belong to it until its next step)."""

    def __init__(self, bundle: Bundle, backend: Backend, max_batch: int = 0) -> None:
        """``max_batch``: the largest batch to come; a backend that runs static shapes faster (OpenVINO)
        compiles one copy per size 2..max_batch now rather than on the first call of each."""
        if bundle.kind == "clip":
            raise ModelError(f"model {bundle.root}: clip bundles are not batched (their window is per camera)")
        self.bundle = bundle
        self.backend = backend
        if max_batch >= 2 and hasattr(backend, "compile_batch_sizes"):
            backend.compile_batch_sizes(list(range(2, max_batch + 1)))
        self._in = bundle.input.name
        self._out = bundle.output_name
        self._pairs = [(s.input, s.output) for s in bundle.states]
        self._bufs: dict[int, dict[str, np.ndarray]] = {}

    def _feeds(self, n: int, like: OnlineClassifier) -> dict[str, np.ndarray]:
        feeds = self._bufs.get(n)
        if feeds is None:
            feeds = {name: np.zeros((n, *arr.shape[1:]), np.float32) for name, arr in like._feeds.items()}
            self._bufs[n] = feeds
        return feeds

    def step(self, clfs: list[OnlineClassifier], inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One preprocessed input (1 x 3 x H x W) per classifier -> their probabilities, in order.

        Raises:
            DataError: an input has the wrong shape or type.
            ModelError: the inference failed.
        """
        n = len(clfs)
        feeds = self._feeds(n, clfs[0])
        for i, (clf, x) in enumerate(zip(clfs, inputs, strict=False)):
            if x.shape != clf._in_shape or x.dtype != np.float32:
                raise DataError(f"input {self._in!r}: expected float32 {list(clf._in_shape)}, "
                                f"got {x.dtype} {list(x.shape)}")
            feeds[self._in][i] = x[0]
            for s_in, _ in self._pairs:
                feeds[s_in][i] = clf._feeds[s_in][0]
        out = self.backend.run(feeds)
        logits = out[self._out]
        probs = []
        for i, clf in enumerate(clfs):
            for s_in, s_out in self._pairs:
                clf._feeds[s_in] = out[s_out][i:i + 1]
            clf.frames += 1
            probs.append(_softmax(logits[i]))
        return probs
