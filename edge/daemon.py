"""The daemon: serve one :class:`edge.pipeline.Pipeline` under systemd, with signals and reload.

Signals (installed by :func:`serve`): SIGTERM/SIGINT stop the cameras, end open events, let the
sinks deliver what they hold and exit 0; SIGHUP re-reads the config file and restarts the pipeline
with it (an invalid new config is logged and the running one kept). The event journal outlives
reloads, so ``seq`` goes on; it lives in the state folder (config ``state_dir``, systemd's
StateDirectory, or the per-user default outside systemd): see :func:`edge.journal.state_dir`.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge.bundle import load_bundle
from edge.config import Config, load_config
from edge.errors import CaptureError, EdgeError, InputError
from edge.events import event_settings
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
        writable_folder(cfg.engine.cache_dir, "engine.cache_dir")


def check(cfg: Config, where: str = "config") -> Pipeline:
    """Open everything ``run`` would open, then close it again; raises the first problem."""
    preflight(cfg)
    journal = open_journal(cfg)  # the state directory must be writable
    p = Pipeline(cfg, journal, where)
    try:
        p.open()
    except BaseException:
        journal.close()
        raise
    try:
        for s in p.streams:  # one frame from each camera proves the source delivers
            s.camera.start()
        deadline = time.monotonic() + max(c.stall_s for c in cfg.cameras)
        pending = {s.name for s in p.streams}
        while pending and time.monotonic() < deadline:
            for s in p.streams:
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
    classified, WATCHDOG=1 while frames make progress, STATUS= lines, RELOADING=1 on SIGHUP,
    STOPPING=1 on the way out.
    Raises:
        EdgeError: the config or something it names cannot be opened at start.
    """
    where = f"config {config_path}"
    cfg = load_config(config_path)
    if not keep_log_level:  # -q / -v on the command line win over the config's log_level
        logging.getLogger().setLevel(cfg.log_level.upper())
    preflight(cfg)
    # An event crosses threads twice (inference -> journal writer -> sink worker); with Python's default
    # 5 ms GIL switch interval each hop can wait that long. 0.5 ms, measured side by side (fsync always,
    # a Unix-socket subscriber): event latency p50 10.6 -> 8.5 ms, p90 18.4 -> 13.0 ms, daemon CPU unchanged.
    switch, _ = sys.getswitchinterval(), sys.setswitchinterval(0.0005)
    notifier = notifier or Notifier()
    stop, reload = threading.Event(), threading.Event()
    previous = {}

    def on_stop(signum: int, _frame: Any) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        reload.set()

    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, h) for sig, h in
                    ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup))}
    current: list[Pipeline] = []
    watchdog = Watchdog(notifier, lambda: current[0].healthy() if current else (True, ""),
                        lambda: current[0].status() if current else "starting")
    m = cfg.metrics
    metrics = MetricsWriter(lambda: current[0].snapshot(), state_dir=state_dir(cfg), interval_s=m.interval_s,
                            textfile=m.textfile, listen=m.listen)
    journal = open_journal(cfg)
    try:
        pipeline = Pipeline(cfg, journal, where)
        pipeline.open()
        current[:] = [pipeline]
        _announce(pipeline, notifier)
        logger.info("ready in %.2f s: %d camera(s), sinks: %s%s", pipeline.ready_s, len(pipeline.streams),
                    ", ".join(s.name for s in pipeline.sinks) or "none",
                    f"; watchdog {notifier.watchdog_s:g} s" if notifier.watchdog_s else "")
        watchdog.start()
        metrics.start()
        while True:
            why = pipeline.run(stop, reload)
            if why != "reload":
                notifier.stopping()
                pipeline.close_clips()
                metrics.stop()  # the last status, with the cameras and sinks still there
                # durable sinks keep what they could not deliver in the journal; memory sinks get 1.5 s too
                pipeline.close(drain_s=1.5)
                logger.info("stopped (%s)", "every camera ended" if why == "ended" else "signal")
                return 0
            reload.clear()
            notifier.reloading()
            pipeline = _reload(pipeline, config_path, where)
            current[:] = [pipeline]
            _announce(pipeline, notifier)
    finally:
        watchdog.stop()
        if current:
            metrics.stop()
        notifier.close()
        journal.close()
        for sig, h in previous.items():
            signal.signal(sig, h)
        sys.setswitchinterval(switch)


def _announce(pipeline: Pipeline, notifier: Notifier) -> None:
    """READY=1 (with what runs where) after the pipeline's first classified frame."""
    def ready() -> None:
        notifier.ready(f"ready: {pipeline.bundle.name if pipeline.bundle else '?'} on {pipeline.engine_text()}, "
                       f"{len(pipeline.streams)} camera(s)")
    pipeline.on_first_frame = ready


def _reload(running: Pipeline, config_path: str | Path, where: str) -> Pipeline:
    """SIGHUP: validate the new config, then swap pipelines; keep the old one if the new is invalid."""
    logger.info("SIGHUP: reloading %s", config_path)
    try:
        new_cfg = load_config(config_path)
        bundle = load_bundle(new_cfg.model)
        event_settings(new_cfg.events, bundle, where)
    except EdgeError as e:
        logger.error("reload refused, still running the previous config: %s", e)
        return running
    running.close()
    logging.getLogger().setLevel(new_cfg.log_level.upper())
    if (new_cfg.state_dir, new_cfg.journal) != (running.cfg.state_dir, running.cfg.journal):
        logger.warning("reload: state_dir and journal settings take effect at the next start")
    fresh = Pipeline(new_cfg, running.journal, where)
    try:
        fresh.open()
    except EdgeError as e:
        logger.error("reload failed (%s); going back to the previous config", e)
        fresh = Pipeline(running.cfg, running.journal, where)
        fresh.open()  # if even that fails, the error ends the daemon (systemd restarts it)
    logger.info("reloaded in %.2f s", fresh.ready_s)
    return fresh
