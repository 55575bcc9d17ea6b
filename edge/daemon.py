"""The daemon: serve one :class:`edge.pipeline.Pipeline` under systemd, with signals and reload.

Signals (installed by :func:`serve`): SIGTERM/SIGINT stop the cameras, end open events, let the
sinks deliver what they hold and exit 0; SIGHUP reloads, transactionally (:class:`Reloader`): the
next pipeline is built and checked while the running one serves, and swapped in only when that
worked; otherwise one line says why and the running pipeline goes on untouched. The event journal
outlives reloads, so ``seq`` goes on; it lives in the state folder (config ``state_dir``, systemd's
StateDirectory, or the per-user default outside systemd): see :func:`edge.journal.state_dir`.

Devices not there at start (a USB camera or serial adapter that appears seconds into boot) are waited
for (``at_start: retry``, the default) while the rest runs; READY=1 goes out once the model is up and
the first available camera delivered, or at once when no camera is there yet, with STATUS= naming what
is waited for.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import Config, load_config, metrics_changes
from edge.errors import CaptureError, EdgeError, InputError
from edge.handover import probe
from edge.journal import open_journal, state_dir
from edge.metrics import MetricsWriter
from edge.notify import Notifier, Watchdog
from edge.paths import show_path, writable_file, writable_folder
from edge.pipeline import Pipeline

logger = logging.getLogger(__name__)


def preflight(cfg: Config) -> None:
    """The files and folders the daemon writes besides the journal: the Prometheus textfile's folder and
    the engine's compile cache, checked before anything opens (``check`` and ``run`` alike).

    Raises:
        InputError: one line naming the key, the path and what to do (exit 66).
    """
    if cfg.metrics.textfile:
        writable_file(cfg.metrics.textfile, "metrics.textfile")
    if cfg.engine.cache_dir:
        if "\\udc" in ascii(cfg.engine.cache_dir):  # the engines take the folder's name as UTF-8 text
            raise InputError(f"engine.cache_dir {show_path(cfg.engine.cache_dir)}: the name is not valid UTF-8, "
                             "which the engines cannot take; choose another folder")
        from edge.cache import private_folder  # made 0700; refused when another user could write in it
        writable_folder(private_folder(cfg.engine.cache_dir, "engine.cache_dir"), "engine.cache_dir")


def check(cfg: Config, where: str = "config") -> Pipeline:
    """Open everything ``run`` would open, then close it again; raises the first problem."""
    preflight(cfg)
    journal = open_journal(cfg, check=True)  # writable, and locked unless a daemon holds it (then only read)
    p = Pipeline(cfg, journal, where, late=True)  # a device not there with at_start: retry is a warning
    try:
        p.open()
    except BaseException:
        journal.close()
        raise
    try:
        there = [s for s in p.streams if s.camera.state != "waiting"]
        for s in there:  # one frame from each camera proves the source delivers
            s.camera.start()
        deadline = time.monotonic() + max(c.stall_s for c in cfg.cameras)
        pending = {s.name for s in there}
        while pending and time.monotonic() < deadline:
            for s in there:
                if s.name in pending and (s.camera.get(timeout=0.05) is not None or s.camera.ended):
                    pending.discard(s.name)
        if pending:
            raise CaptureError(f"camera {sorted(pending)[0]}: opened but delivered no frame within "
                               f"{max(c.stall_s for c in cfg.cameras):g} s")
    finally:
        p.close(drain_s=1.0)
        journal.close()
    return p


def serve(config_path: str | Path, notifier: Notifier | None = None, keep_log_level: bool = False) -> int:
    """``edge-tsm run --config PATH``: run until SIGTERM/SIGINT (or every camera has ended); 0 on a clean stop.

    Under systemd (``NOTIFY_SOCKET``): READY=1 once the model is warm and the first frame is
    classified (at once when no camera is there yet), WATCHDOG=1 while frames make progress, STATUS=
    lines, RELOADING=1 on SIGHUP (then READY=1 again, after the swap or the refusal), STOPPING=1 on
    the way out.
    Raises:
        EdgeError: the config or something it names cannot be opened at start.
    """
    where = f"config {config_path}"
    cfg = load_config(config_path)
    if not keep_log_level:  # -q / -v on the command line win over the config's log_level
        logging.getLogger().setLevel(cfg.log_level.upper())
    preflight(cfg)
    notifier = notifier or Notifier()
    stop = threading.Event()
    current: list[Pipeline] = []
    journal = open_journal(cfg)
    reloader = Reloader(config_path, where, journal, lambda: current[0] if current else None, notifier)
    watchdog = Watchdog(notifier, lambda: current[0].healthy() if current else (True, ""),
                        lambda: current[0].status() if current else "starting")
    switch, previous, metrics = sys.getswitchinterval(), {}, None

    def on_stop(signum: int, _frame: Any) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        reloader.request()

    try:
        # An event crosses threads twice (inference -> journal writer -> sink worker); with Python's default
        # 5 ms GIL switch interval each hop can wait that long. 0.5 ms, measured side by side (fsync always,
        # a Unix-socket subscriber): event latency p50 10.6 -> 8.5 ms, p90 18.4 -> 13.0 ms, daemon CPU unchanged.
        sys.setswitchinterval(0.0005)
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, h) for sig, h in
                        ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup))}
        m = cfg.metrics
        metrics = MetricsWriter(lambda: _snapshot(current[0]), state_dir=state_dir(cfg), interval_s=m.interval_s,
                                textfile=m.textfile, listen=m.listen)
        pipeline = Pipeline(cfg, journal, where, late=True)
        pipeline.open()
        current[:] = [pipeline]
        waiting = pipeline.waiting()
        logger.info("ready in %.2f s: %d camera(s), sinks: %s%s%s", pipeline.ready_s, len(pipeline.streams),
                    ", ".join(s.name for s in pipeline.sinks) or "none",
                    f"; waiting for {', '.join(waiting)}" if waiting else "",
                    f"; watchdog {notifier.watchdog_s:g} s" if notifier.watchdog_s else "")
        _announce(pipeline, notifier)
        watchdog.start()
        metrics.start()
        reloader.start()
        while True:
            why = pipeline.run(stop, reloader.ready)
            if why != "reload":
                notifier.stopping()
                pipeline.close_clips()
                # durable sinks keep what they could not deliver in the journal; memory sinks get 1.5 s too
                pipeline.close(drain_s=1.5)
                metrics.stop()  # the last status: after the journal's flush and the sinks' drain (issue 16)
                logger.info("stopped (%s)", "every camera ended" if why == "ended" else "signal")
                return 0
            pipeline = _swap(pipeline, reloader.take(), keep_log_level)
            current[:] = [pipeline]
            reloader.swapped()
            _announce(pipeline, notifier)
    finally:
        reloader.stop()
        watchdog.stop()
        if current and metrics is not None:
            metrics.stop()
        notifier.close()
        journal.close()
        for sig, h in previous.items():
            signal.signal(sig, h)
        sys.setswitchinterval(switch)


def _snapshot(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's figures; once it is closed, those it had when everything was delivered."""
    closed = pipeline.closed_snapshot
    return dict(closed) if closed is not None else pipeline.snapshot()


def _announce(pipeline: Pipeline, notifier: Notifier) -> None:
    """READY=1 (with what runs where, and what is waited for) after the pipeline's first classified frame,
    or now when no camera is there yet (systemd's start must not time out on a camera still unplugged)."""
    def ready() -> None:
        waiting = pipeline.waiting()
        also = f"; waiting for {', '.join(waiting)}" if waiting else ""
        notifier.ready(f"ready: {pipeline.bundle.name if pipeline.bundle else '?'} on {pipeline.engine_text()}, "
                       f"{len(pipeline.streams)} camera(s){also}")
    if all(s.camera.state == "waiting" for s in pipeline.streams):
        pipeline.on_first_frame = None
        ready()
    else:
        pipeline.on_first_frame = ready


def _swap(running: Pipeline, fresh: Pipeline, keep_log_level: bool) -> Pipeline:
    """Hand the devices over: the running pipeline stops its cameras, ends and journals its open events,
    lets its sinks deliver them (durable sinks save their cursors) and closes; the new one opens its
    devices (never failing: what is away is waited for) and its durable sinks resume from their cursors."""
    t0 = time.perf_counter()
    new, old = fresh.cfg, running.cfg
    if not keep_log_level:
        logging.getLogger().setLevel(new.log_level.upper())
    later = [k for k in ("state_dir", "journal") if getattr(new, k) != getattr(old, k)]
    if later:
        logger.warning("reload: %s take effect at the next start", ", ".join(later))
    for line in metrics_changes(old, new):
        logger.warning("reload: %s", line)
    running.close(drain_s=1.5)
    fresh.open_devices(handover=True)
    logger.info("reloaded in %.2f s (the new pipeline was built in %.2f s while the previous one ran on)",
                time.perf_counter() - t0, fresh.prepare_s)
    return fresh


class Reloader:
    """SIGHUP, transactionally: builds the next pipeline in its own thread while the running one serves
    (config read and checked, model loaded and compiled, event settings, cameras and sinks constructed and
    probed: :func:`edge.handover.probe`), and sets :attr:`ready` only when that worked; serve() then takes
    it (:meth:`take`), swaps, and says so (:meth:`swapped`): the next build is probed against it. Anything
    wrong is one line (``reload refused, still running the previous config: ...``), READY=1 goes out
    again, and the running pipeline was never touched. HUPs that come while one is built make one more
    build after it (30 HUPs in a row: a few reloads, each whole)."""

    def __init__(self, config_path: str | Path, where: str, journal: Any,
                 running: Callable[[], Pipeline | None], notifier: Notifier) -> None:
        self.config_path, self.where, self.journal = config_path, where, journal
        self.running, self.notifier = running, notifier
        self.ready = threading.Event()       # a built pipeline waits to be taken
        self._requested = threading.Event()  # SIGHUP came
        self._taken = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._candidate: Pipeline | None = None
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Ask for a reload (the signal handler: cheap, never blocks)."""
        self._requested.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
        self._thread.start()

    def take(self) -> Pipeline:
        """The built pipeline (devices not open yet: :meth:`Pipeline.open_devices`)."""
        with self._lock:
            fresh, self._candidate = self._candidate, None
            self.ready.clear()
        return fresh

    def swapped(self) -> None:
        """The pipeline taken runs now: a next build may begin (and probe its devices against it)."""
        self._taken.set()

    def stop(self, timeout: float = 5.0) -> None:
        """No more reloads; a pipeline built but not taken is closed."""
        with self._lock:
            self._stop.set()
            fresh, self._candidate = self._candidate, None
        self._requested.set()
        self._taken.set()
        if fresh is not None:
            fresh.close(drain_s=0.0)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._requested.wait()
            if self._stop.is_set():
                return
            self._requested.clear()
            fresh = self._build()
            if fresh is None:
                continue
            with self._lock:
                keep = not self._stop.is_set()
                if keep:
                    self._taken.clear()
                    self._candidate = fresh
                    self.ready.set()
            if not keep:
                fresh.close(drain_s=0.0)
                return
            self._taken.wait()

    def _build(self) -> Pipeline | None:
        logger.info("SIGHUP: reloading %s (the running pipeline serves meanwhile)", self.config_path)
        self.notifier.reloading()
        try:
            cfg = load_config(self.config_path)
            preflight(cfg)
            fresh = Pipeline(cfg, self.journal, self.where, late=True)
            try:
                fresh.prepare()
                probe(fresh, self.running())
            except BaseException:
                fresh.close(drain_s=0.0)
                raise
        except Exception as e:  # noqa: BLE001 - a reload never ends the daemon: a bug is logged like a refusal
            if isinstance(e, EdgeError):
                logger.error("reload refused, still running the previous config: %s", e)
            else:
                logger.exception("reload refused, still running the previous config: %s: %s", type(e).__name__, e)
            self.notifier.ready(f"reload refused, still running the previous config: {' '.join(str(e).split())}")
            return None
        return fresh
