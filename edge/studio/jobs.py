"""Background jobs (teach, eval-events): one worker thread, in order, with progress, a result and cancel.

One at a time on purpose: both run the engine on every core they get, and on a 2-core device a second
one would only slow the first (and the daemon, if it runs there too).
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.errors import EdgeError
from edge.studio.settings import StudioError

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
_KEEP = 50        # finished jobs remembered


class Cancelled(Exception):
    """Raised inside a job's work when its cancel event is set."""


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    work: Callable[[Job], dict[str, Any]]
    state: str = "queued"
    stage: str | None = None
    done: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, stage: str, done: int, total: int) -> None:
        """The work's progress callback (``teach``'s ``progress=``); also where a cancel is noticed."""
        self.stage, self.done, self.total = stage, int(done), int(total)

    def json(self) -> dict[str, Any]:
        end = self.finished or time.time()
        return {"id": self.id, "kind": self.kind, "state": self.state, "params": self.params,
                "progress": {"stage": self.stage, "done": self.done, "total": self.total},
                "created": self.created, "started": self.started, "finished": self.finished,
                "seconds": round(end - self.started, 2) if self.started else None,
                "error": self.error, "result": self.result}


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="studio-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, params: dict[str, Any], work: Callable[[Job], dict[str, Any]]) -> Job:
        job = Job(f"j{next(self._ids)}", kind, params, work)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished]
            for old in sorted(finished, key=lambda j: j.finished)[:max(0, len(finished) - _KEEP)]:
                del self._jobs[old.id]
        self._q.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise StudioError(404, f"job {job_id!r}: no such job (the server forgets them when it stops)")
        return job

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        if job.state == "queued":
            job.state, job.finished = "cancelled", time.time()
        return job

    def close(self, timeout: float = 5.0) -> None:
        for job in self.all():
            job.cancel.set()
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            if job.state != "queued":
                continue
            job.state, job.started = "running", time.time()
            try:
                job.result = job.work(job)
                job.state = "cancelled" if job.cancel.is_set() and job.result is None else "done"
            except Cancelled:
                job.state = "cancelled"
            except StudioError as e:
                job.state, job.error = "failed", str(e)
            except EdgeError as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # noqa: BLE001 - a bug in one job must not stop the worker
                logger.exception("job %s (%s) failed", job.id, job.kind)
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            job.finished = time.time()
            if job.error:
                logger.warning("job %s (%s): %s", job.id, job.kind, job.error)
            else:
                logger.info("job %s (%s): %s in %.1f s", job.id, job.kind, job.state, job.finished - job.started)
