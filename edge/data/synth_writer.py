"""Writing generated clips as video files, here or in worker processes (``generate_dataset(workers=N)``).

Each clip is drawn from its own seed, so the files are the same whatever the number of workers and the
order they finish in. Workers start by forkserver (no copy of the parent's threads) and use one OpenCV
thread each, so N workers keep N cores busy without oversubscribing them.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import InputError


@dataclass(frozen=True)
class ClipJob:
    label: str
    index: int        # the class's index in ALL_CLASSES (part of the seed)
    seed: int
    i: int
    path: Path
    size: tuple[int, int]
    frames: int
    fps: float
    difficulty: float | None
    generator: int
    distractors: float | None = None


def write_clip(job: ClipJob) -> None:
    """Render ``job``'s clip from ``default_rng([seed, index, i])`` and write it as mp4v.

    Raises:
        InputError: the file cannot be opened for writing.
    """
    from edge.data.synth import render_clip
    clip = render_clip(job.label, np.random.default_rng([job.seed, job.index, job.i]), job.size, job.frames,
                       difficulty=job.difficulty, generator=job.generator, distractors=job.distractors)
    writer = cv2.VideoWriter(str(job.path), cv2.VideoWriter_fourcc(*"mp4v"), float(job.fps), job.size)
    if not writer.isOpened():
        raise InputError(f"cannot open {job.path} for writing (OpenCV VideoWriter, codec mp4v)")
    try:
        for img in clip:
            writer.write(img)
    finally:
        writer.release()


def _worker_init() -> None:
    cv2.setNumThreads(1)
    # the parent said once whether photographs are there (edge.data.textures): the workers do not repeat it
    logging.getLogger("edge.data.textures").setLevel(logging.ERROR)


def write_clips(jobs: Sequence[ClipJob], workers: int = 1, progress: bool = False) -> None:
    """Write every job's clip, with ``workers`` processes (1: in this one); with ``progress`` one line per
    class on stderr once its clips are written.

    Raises:
        InputError: a file cannot be written (the first such error, from whichever process).
    """
    last = {job.label: n for n, job in enumerate(jobs)}  # the job that completes each class
    per_class = {label: sum(j.label == label for j in jobs) for label in last}

    def done(n: int, job: ClipJob) -> None:
        if progress and last[job.label] == n:
            print(f"synth: {job.label}: {per_class[job.label]} clips", file=sys.stderr, flush=True)

    if workers <= 1:
        for n, job in enumerate(jobs):
            write_clip(job)
            done(n, job)
        return
    if any(job.generator >= 5 for job in jobs):
        from edge.data.textures import photos
        photos()  # its warning, when scikit-image is missing, once here rather than once per worker
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("forkserver"),
                             initializer=_worker_init) as ex:
        for n, (job, _) in enumerate(zip(jobs, ex.map(write_clip, jobs, chunksize=4), strict=True)):
            done(n, job)
