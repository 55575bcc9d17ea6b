"""The training input pipeline: a ``torch.utils.data`` loader whose workers decode and augment clips.

* Every sample's random window and augmentation are drawn from a generator seeded by
  ``(seed, epoch, index)``, never from a worker's RNG state: 0, 1 or 8 workers, one process or
  several, give the same clips for a seed.
* The batch order is one permutation per epoch seeded by ``(seed, epoch)`` over the whole set; a
  step takes the next ``batch`` (global) indices and process ``rank`` of ``world`` takes its slice
  of them, so N processes together see exactly the batches one process sees.
* A small set is decoded once into memory (:class:`ClipSource`, up to ``cache_gb``), in shared memory:
  the workers read it without copying. A large one streams from disk: each worker
  decodes the clips it is given, at most ``prefetch`` batches ahead, so memory stays bounded.
* A clip that cannot be decoded is skipped: the batch comes without it and names it
  (:attr:`Batch.skipped`); the trainer logs it once and counts it.
* A dataset's recordings (``ROOT/recordings``, annotated) give windows labelled frame by frame
  (:attr:`Batch.frame_y`), one per window length of the recording per epoch, at random places.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.data.dataset import ClipAugment, VideoDataset, read_span, read_video
from edge.errors import InputError, UsageError
from edge.models.export import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)
IGNORE = -100        # a label not scored (cross_entropy's ignore_index)
SETTLE_FRAMES = 2    # graph frames of a window not scored at its start (zero states) and after a label changes


def _shared(nbytes: int) -> torch.Tensor:
    """``nbytes`` of uint8 in shared memory (untouched pages: the memory is taken as it is written)."""
    return torch.empty(nbytes, dtype=torch.uint8).share_memory_()


class ClipSource:
    """Decoded clips, cached in memory when they fit in ``cache_gb``; a clip that cannot be decoded is
    named once in the log and raises :class:`InputError` when asked for.

    The cache is one flat uint8 tensor in shared memory (plus each clip's offset and shape): loader
    workers, started by a fork server (a fork of a process that has run OpenCV's thread pool can
    deadlock in OpenCV), receive it as one shared-memory handle, without a copy."""

    def __init__(self, ds: VideoDataset, cache_gb: float) -> None:
        self.ds = ds
        # the clips, then the recordings: item i < len(ds.clips) is clip i
        self.paths = [c.path for c in ds.clips] + [r.path for r in ds.recordings]
        self.store: torch.Tensor | None = None
        self.spans: list[tuple[int, tuple[int, ...]] | None] = []
        self.bad: dict[int, str] = {}
        first, first_i = None, 0
        for first_i, path in enumerate(self.paths):  # the size estimate needs one video that decodes
            try:
                first = read_video(path)
                break
            except InputError as e:
                self.bad[first_i] = str(e)
        if first is not None:
            per_frame = first[0].nbytes
            clip_frames = len(first) if first_i < len(ds.clips) else 24
            estimate = per_frame * (clip_frames * len(ds.clips) + sum(r.frames for r in ds.recordings))
            if estimate / 1e9 <= cache_gb:
                self._fill(first, first_i, int(estimate), int(cache_gb * 1e9))
        for msg in self.bad.values():
            logger.warning("skipped: %s", msg)

    def _fill(self, first: np.ndarray, first_i: int, estimate: int, budget: int) -> None:
        """Decode every item into one block allocated in shared memory up front (never copied at the end: a
        copy would need twice the cache for a moment, and a cache of half the memory was killed by the kernel);
        a block that must grow past ``budget`` bytes (items larger than the estimate) is given up: the set
        streams."""
        store = _shared(max(estimate, first.nbytes))
        spans: list[tuple[int, tuple[int, ...]] | None] = [None] * len(self.paths)
        used = 0
        for i in range(first_i, len(self.paths)):
            try:
                video = first if i == first_i else read_video(self.paths[i])
            except InputError as e:
                self.bad[i] = str(e)
                continue
            if used + video.nbytes > store.numel():   # items larger than estimated: grow by half, within budget
                grow = max(used + video.nbytes, store.numel() * 3 // 2)
                if store.numel() + grow > budget:     # the old block and the new one, for the copy
                    logger.info("decoded clips outgrow the cache (%.1f GB of %.1f): streaming from disk",
                                grow / 1e9, budget / 1e9)
                    return
                bigger = _shared(grow)
                bigger[:used] = store[:used]
                store = bigger
            store[used:used + video.nbytes] = torch.from_numpy(video.reshape(-1))
            spans[i] = (used, video.shape)
            used += video.nbytes
        self.store, self.spans = store[:used], spans

    @property
    def cached(self) -> bool:
        return self.store is not None

    def __len__(self) -> int:
        return len(self.paths)

    def length(self, i: int) -> int:
        """Frames of item ``i``: a recording's annotated length (the same cached or not, so the same windows),
        a clip's frame count."""
        nc = len(self.ds.clips)
        return self.ds.recordings[i - nc].frames if i >= nc else len(self.frames(i))

    def span(self, i: int, first: int, stop: int) -> np.ndarray:
        """Frames ``first..stop`` of item ``i`` (from the cache, or decoded from ``first`` on: a recording's
        window costs its own frames, not the whole recording's). Raises: InputError: as :meth:`frames`."""
        if i in self.bad:
            raise InputError(self.bad[i])
        if self.store is not None:
            return self.frames(i)[first:stop]
        return read_span(self.paths[i], first, stop)

    def frames(self, i: int) -> np.ndarray:
        """Raises: InputError: the clip cannot be decoded."""
        if i in self.bad:
            raise InputError(self.bad[i])
        if self.store is not None:
            off, shape = self.spans[i]
            return self.store[off:off + int(np.prod(shape))].numpy().reshape(shape)
        return read_video(self.paths[i])


def input_hw(size: int | str) -> tuple[int, int]:
    """(height, width) of a training input ``size``: an int (a square side) or ``"WIDTHxHEIGHT"`` as the other
    ``--size`` options say it (a digit string is a square side).

    Raises:
        UsageError: anything else, or a side under 8 pixels.
    """
    text = str(size).strip().lower()
    w, x, h = text.partition("x")
    try:
        hw = (int(h), int(w)) if x else (int(text), int(text))
    except ValueError:
        hw = None
    if isinstance(size, bool) or hw is None or min(hw) < 8:
        raise UsageError(f"--size {str(size)!r}: give a square side or WIDTHxHEIGHT, each at least 8 pixels "
                         "(e.g. 112 or 160x120)")
    return hw


def sample_window(n: int, frames: int, stride: int, rng: np.random.Generator | None) -> np.ndarray:
    """Indices of ``frames`` frames at ``stride``; random start (``rng``) or centred; clamped at the end."""
    span = (frames - 1) * stride + 1
    start = 0 if n <= span else (int(rng.integers(0, n - span + 1)) if rng is not None else (n - span) // 2)
    return np.minimum(start + np.arange(frames) * stride, n - 1)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: the same wherever (which worker, which process) it is drawn."""
    return np.random.default_rng([seed, epoch, index])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class ClipDataset(torch.utils.data.Dataset):
    """``(epoch, index)`` -> ``(index, uint8 T x 3 x H x W RGB tensor, label, frame labels or None)``, or
    ``(index, None, reason, None)``. Indices past the clips are windows of the recordings: each recording
    gives one window per window length it holds (at least one), each at a random place.

    The epoch travels with the index (not as an attribute) so persistent workers, which hold their own
    copy of this object, draw the right epoch's augmentation."""

    def __init__(self, src: ClipSource, aug: ClipAugment, frames: int, stride: int, seed: int) -> None:
        self.src, self.aug, self.frames, self.stride, self.seed = src, aug, frames, stride, seed
        self.labels = [c.label for c in src.ds.clips]
        self.windows = [j for j, r in enumerate(src.ds.recordings) for _ in range(r.windows(frames, stride))]

    def __len__(self) -> int:
        return len(self.labels) + len(self.windows)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, torch.Tensor | None, int | str, Any]:
        epoch, i = key
        rng = sample_rng(self.seed, epoch, i)
        nc = len(self.labels)
        if i < nc:
            try:
                video = self.src.frames(i)
            except InputError as e:
                return i, None, str(e), None
            rgb, label = self.aug(video[sample_window(len(video), self.frames, self.stride, rng)], self.labels[i], rng)
            return i, torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2), label, None
        item = nc + self.windows[i - nc]
        try:
            n = self.src.length(item)
            idx = sample_window(n, self.frames, self.stride, rng)
            video = self.src.span(item, int(idx[0]), int(idx[-1]) + 1)
        except InputError as e:
            return i, None, str(e), None
        sel = video[np.minimum(idx - idx[0], len(video) - 1)]   # a video shorter than its rows: its last frame
        rgb, fl = self.aug(sel, window_labels(self.src.ds.recordings[item - nc].frame_labels(n), idx), rng)
        return i, torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2), IGNORE, fl


def window_labels(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per graph frame of a window (source frames ``idx``) the label to score, or :data:`IGNORE`: not the
    first :data:`SETTLE_FRAMES` (the states start from zero), not the first ones after the label changes (what
    the frames show lags a motion's start and end), nor frames no annotation covers."""
    out = labels[idx].copy()
    out[out < 0] = IGNORE
    out[:SETTLE_FRAMES] = IGNORE
    for k in range(1, len(idx)):
        if labels[idx[k]] != labels[idx[k - 1]]:
            out[k:k + SETTLE_FRAMES] = IGNORE
    return out


@dataclass
class Batch:
    """One process's share of a step: uint8 clips (N x T x 3 x H x W), clip labels (:data:`IGNORE` for a
    recording's window), the dataset indices, the clips skipped (their error lines) and, when the batch holds
    windows of recordings, their per-frame labels (N x T, :data:`IGNORE` for the clips' rows)."""

    x: torch.Tensor
    y: torch.Tensor
    index: list[int]
    skipped: list[str] = field(default_factory=list)
    frame_y: torch.Tensor | None = None

    def pin_memory(self) -> Batch:
        self.x, self.y = self.x.pin_memory(), self.y.pin_memory()
        if self.frame_y is not None:
            self.frame_y = self.frame_y.pin_memory()
        return self


def collate(samples: list[tuple[int, torch.Tensor | None, int | str, Any]]) -> Batch:
    good = [s for s in samples if s[1] is not None]
    skipped = [str(s[2]) for s in samples if s[1] is None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), [], skipped)
    frame_y = None
    if any(s[3] is not None for s in good):
        t = good[0][1].shape[0]
        frame_y = torch.tensor(np.stack([s[3] if s[3] is not None else np.full(t, IGNORE) for s in good]),
                               dtype=torch.long)
    return Batch(torch.stack([s[1] for s in good]), torch.tensor([s[2] for s in good], dtype=torch.long),
                 [s[0] for s in good], skipped, frame_y)


class StepSampler(torch.utils.data.Sampler):
    """The batches of one epoch for one process: ``[(epoch, index), ...]`` per step (see the module doc)."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.local = batch // world
        self.epoch, self.first_step = 0, 0

    def set_epoch(self, epoch: int, first_step: int = 0) -> None:
        self.epoch, self.first_step = epoch, first_step

    def steps(self) -> int:
        return max(1, self.n // self.batch)

    def __len__(self) -> int:
        return self.steps() - self.first_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_order(self.n, self.seed, self.epoch)
        for b in range(self.first_step, self.steps()):
            glob = order[b * self.batch:(b + 1) * self.batch]
            mine = glob[self.rank * self.local:(self.rank + 1) * self.local]
            yield [(self.epoch, int(i)) for i in mine]


def _worker_init(_: int) -> None:
    import cv2
    torch.set_num_threads(1)   # the training process owns the compute threads
    cv2.setNumThreads(1)       # safe: a fork server's child, never a fork of a process that ran OpenCV's pool


def _context() -> mp.context.BaseContext:
    """Workers are forked by a fork server that has imported this module (fast start, clean OpenCV state)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["edge.models.loader"])
    return ctx


def make_loader(dataset: ClipDataset, sampler: StepSampler, workers: int, pin: bool,
                prefetch: int = 2) -> torch.utils.data.DataLoader:
    """The loader: ``workers`` processes (0: in this process), persistent, ``prefetch`` batches ahead each."""
    extra = {"persistent_workers": True, "prefetch_factor": prefetch, "worker_init_fn": _worker_init,
             "multiprocessing_context": _context()} if workers > 0 else {}
    # Its own generator: the loader draws a base seed at each epoch's iterator, which must not consume the
    # global torch RNG (dropout's), or a resumed run would drop other units than an uninterrupted one.
    gen = torch.Generator().manual_seed(dataset.seed)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                       pin_memory=pin, generator=gen, **extra)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ... x 3 x H x W -> float, ImageNet-normalised (on the tensor's device)."""
    m = torch.tensor(mean, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, device=x.device).view(3, 1, 1)
    return (x.float().div_(255.0) - m) / s


def cache_budget_gb(cache_gb: float | None, processes: int = 1) -> float:
    """The decoded-clip cache of one process: ``cache_gb`` when given, else half the memory available now
    (``MemAvailable``) shared by the ``processes`` on this machine; 6 GB where the memory cannot be read."""
    if cache_gb is not None:
        return float(cache_gb)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        avail = kib * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 6.0
    return round(0.5 * avail / 1e9 / max(1, processes), 1)


def synth_provenance(data: str) -> dict[str, Any]:
    """``generator`` (and the synth seed) when the training data was made by ``dataset synth`` (its synth.json):
    the INT8 check and ``quantize --recipe`` render their clips from the generator a bundle was trained on."""
    try:
        have = json.loads((Path(data) / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    gen = have.get("generator") if isinstance(have, dict) else None
    return {"generator": gen} if isinstance(gen, int) and not isinstance(gen, bool) else {}
