"""The daemon: cameras -> one compiled model -> per-camera events -> sinks.

Threads: one capture thread per camera (:class:`edge.capture.Camera`, latest-frame semantics for
live sources), one worker per sink (bounded queue, :mod:`edge.sinks`), and the inference loop in
the caller's thread, which serves the cameras round-robin so one busy camera cannot starve another.
All cameras share one compiled engine; each camera has its own states (:class:`OnlineClassifier`)
and its own event detector. A capture gap (reconnect, file loop) resets that camera's states and
ends its open event.

Signals (installed by :func:`serve`): SIGTERM/SIGINT stop the cameras, end open events, let the
sinks deliver what they hold and exit 0; SIGHUP re-reads the config file and restarts the pipeline
with it (an invalid new config is logged and the running one kept).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.backends import Backend, create_backend
from edge.batching import batched_graph
from edge.bundle import Bundle, load_bundle, validate_graph
from edge.capture import Camera, create_source
from edge.classifier import BatchStepper, OnlineClassifier
from edge.classify import default_event_settings
from edge.clips import ClipRecorder, ClipSpool, file_sha256
from edge.config import Config, EventsConfig, load_config, sink_names
from edge.errors import ConfigError, EdgeError
from edge.events import EventDetector, EventSettings, Thresholds
from edge.journal import Journal
from edge.metrics import Histogram, MetricsWriter
from edge.notify import Notifier, Watchdog
from edge.preprocess import PreprocessRing, frame_need
from edge.sinks import Sink, create_sink

logger = logging.getLogger(__name__)


def event_settings(ev: EventsConfig, bundle: Bundle, where: str = "config") -> EventSettings:
    """The config's ``events`` section over the defaults that suit the bundle's decision rate.

    Raises:
        ConfigError: a label in ``ignore`` / ``classes`` is not one of the model's, or a class's
            exit threshold ends up above its enter threshold.
    """
    base = default_event_settings(bundle)
    for key, names in (("ignore", ev.ignore or []), ("classes", list(ev.classes))):
        for name in names:
            if name not in bundle.labels:
                raise ConfigError(f"{where}: events.{key}: {name!r} is not a label of model {bundle.name!r} "
                                  f"(labels: {', '.join(bundle.labels)})")
    b = base.defaults
    d = Thresholds(enter=b.enter if ev.enter is None else ev.enter, exit=b.exit if ev.exit is None else ev.exit,
                   min_frames=b.min_frames if ev.min_frames is None else ev.min_frames,
                   cooldown_s=b.cooldown_s if ev.cooldown_s is None else ev.cooldown_s)
    if d.exit > d.enter:
        raise ConfigError(f"{where}: events: exit ({d.exit}) must be <= enter ({d.enter})")
    classes = {}
    for name, c in ev.classes.items():
        t = Thresholds(enter=d.enter if c.enter is None else c.enter, exit=d.exit if c.exit is None else c.exit,
                       min_frames=d.min_frames if c.min_frames is None else c.min_frames,
                       cooldown_s=d.cooldown_s if c.cooldown_s is None else c.cooldown_s)
        if t.exit > t.enter:
            raise ConfigError(f"{where}: events.classes.{name}: exit ({t.exit}) must be <= enter ({t.enter})")
        classes[name] = t
    return EventSettings(window=base.window if ev.window is None else ev.window, smoothing=ev.smoothing,
                         ema_alpha=ev.ema_alpha, defaults=d,
                         ignore=base.ignore if ev.ignore is None else tuple(ev.ignore), classes=classes,
                         warmup=base.warmup if ev.warmup is None else ev.warmup)


def daemon_threads(e: Any) -> int | None:
    """Engine threads for the daemon: the config's, else 1 for ONNX Runtime on the CPU.

    Measured on the 2-core machine (docs/performance.md): one intra-op thread makes a step at most 8 %
    slower but cuts its CPU by 26 % and leaves the other core to the capture threads, so more cameras
    fit; a second thread buys almost no speed. OpenVINO keeps its own choice (its threads do not spin).
    """
    if e.threads:
        return e.threads
    return 1 if e.type == "onnxruntime" and e.device.upper() == "CPU" else None


def _cache_dir(configured: str | None) -> Path | None:
    """The engine's compile cache: the config's, else systemd's CacheDirectory= ($CACHE_DIRECTORY)."""
    if configured:
        return Path(configured)
    env = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(env) if env else None


class RunSeq:
    """``seq`` for events when there is no journal: counts from 1 for this daemon run."""

    def __init__(self) -> None:
        self.last_seq = 0

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        self.last_seq += 1
        return {**event, "seq": self.last_seq}

    def close(self) -> None:
        pass


def state_dir(cfg: Config) -> Path | None:
    """The config's state_dir, else systemd's StateDirectory ($STATE_DIRECTORY), else None."""
    folder = cfg.state_dir or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(folder) if folder else None


def open_journal(cfg: Config) -> Journal | RunSeq:
    """The event journal in ``state_dir`` (or systemd's StateDirectory); RunSeq without one.

    Raises:
        InputError: the state directory cannot be created or written.
    """
    folder = state_dir(cfg)
    if not folder:
        logger.info("no state_dir: events are not journaled (a restart loses what a sink had not delivered)")
        return RunSeq()
    j = cfg.journal
    journal = Journal(Path(folder) / "journal", fsync=j.fsync, fsync_interval_s=j.fsync_interval_s,
                      max_bytes=int(j.max_mb * (1 << 20)), segment_bytes=min(1 << 20, int(j.max_mb * (1 << 20)) // 4))
    logger.info("journal %s: last seq %d, fsync %s", journal.folder, journal.last_seq, j.fsync)
    return journal


@dataclass
class Stream:
    """One camera's share of the pipeline."""

    name: str
    camera: Camera
    clf: OnlineClassifier
    det: EventDetector
    classified: int = 0
    events: int = 0
    infer_ms: float = 0.0          # exponential average of the engine step (+ preprocessing if not prepared)
    last_ts: float = 0.0
    last_frame: float = 0.0        # time.monotonic() of the last frame taken from the camera
    hist: Histogram = field(default_factory=Histogram)
    recent_ms: deque = field(default_factory=lambda: deque(maxlen=256))
    by_label: dict[str, int] = field(default_factory=dict)
    rec: ClipRecorder | None = None  # field clips (config ``clips``)


@dataclass
class Pipeline:
    """Everything one config opens; :meth:`open` fails before anything runs (``check`` uses it)."""

    cfg: Config
    where: str = "config"
    journal: Journal | RunSeq = field(default_factory=RunSeq)   # gives each event its seq (and keeps it)
    bundle: Bundle | None = None
    backend: Backend | None = None
    streams: list[Stream] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    spool: ClipSpool | None = None
    stepper: BatchStepper | None = None  # several cameras' frames in one engine call
    max_batch: int = 1
    ready_s: float = 0.0
    on_first_frame: Callable[[], None] | None = None   # called once, after the first frame is classified
    heartbeat: float = 0.0         # time.monotonic() at the top of each loop round (a hung step stops it)
    started: float = field(default_factory=time.monotonic)
    step_started: float = 0.0      # time.monotonic() when the current step began, 0 between steps

    def open(self) -> None:
        """Load the model, compile and warm up the engine, open cameras and sinks.

        Raises:
            EdgeError: the first thing that cannot be opened (config 78, input 66, model 65, device 69).
                What was already opened is closed again.
        """
        t0 = time.perf_counter()
        cfg = self.cfg
        try:
            self.bundle = load_bundle(cfg.model)
            settings = event_settings(cfg.events, self.bundle, self.where)
            e = cfg.engine
            precision = e.precision or self.bundle.precision  # the bundle's default unless the config says
            if precision != self.bundle.precision:
                validate_graph(self.bundle, precision)
            self.backend = create_backend(e.type, self.bundle.graph_path(precision), device=e.device,
                                          threads=daemon_threads(e), precision_hint=e.precision_hint,
                                          cache_dir=_cache_dir(e.cache_dir),
                                          allow_fallback=e.allow_fallback)
            logger.info("model %s: %s graph %s (%s), %d labels, on %s %s, engine float precision %s, warm-up %.0f ms",
                        self.bundle.name, precision.upper(), self.bundle.graph_path(precision).name,
                        "set by engine.precision" if e.precision else "the bundle's default",
                        len(self.bundle.labels), self.backend.name, self.backend.device, self.backend.precision_note,
                        self.backend.warmup_s * 1000)
            self._open_batching(precision)
            t = self.bundle.temporal
            rate = t.fps / max(1, t.frame_stride)
            if cfg.clips is not None:
                self.spool = open_spool(cfg, self.bundle, precision, self.where)
            for c in cfg.cameras:
                cam = Camera(c, rate_hz=rate, source=create_source(c))
                cam.prepare = PreprocessRing(self.bundle.input)  # preprocessing runs in the capture thread
                stream = Stream(c.name, cam, OnlineClassifier(self.bundle, self.backend),
                                EventDetector(self.bundle.labels, settings, camera=c.name))
                if self.spool is not None and (cfg.clips.cameras is None or c.name in cfg.clips.cameras):
                    stream.rec = ClipRecorder(c.name, cfg.clips, self.spool, self.bundle.labels,
                                              cfg.clips.fps or t.fps, lossless=not cam.source.live)
                    cam.tap = stream.rec.tap
                w, h, short = frame_need(self.bundle.input)
                if stream.rec:  # the clips keep frames up to clips.width (null: as captured, so no reduced decode)
                    w = max(w, cfg.clips.width or 1 << 16)
                cam.source.need = (w, h, short)
                self.streams.append(stream)
                cam.open()
            for s_cfg, name in zip(cfg.sinks, sink_names(cfg), strict=False):
                sink = create_sink(s_cfg, name)
                if isinstance(self.journal, Journal) and sink.durable:
                    sink.attach_journal(self.journal)
                sink.open()
                self.sinks.append(sink)
        except BaseException:
            self.close(drain_s=0.0)
            raise
        self.ready_s = time.perf_counter() - t0

    def _open_batching(self, precision: str) -> None:
        """With several cameras and engine.max_batch > 1: a second compiled graph with a batch dimension."""
        e = self.cfg.engine
        if len(self.cfg.cameras) < 2 or e.max_batch < 2 or self.bundle.kind == "clip":
            return
        device = e.device.upper()
        if device not in (("CPU", "CUDA", "GPU") if e.type == "onnxruntime" else ("CPU",)):
            # NPUs want static shapes; TensorRT would build an engine per batch size (minutes on a Jetson)
            logger.info("batching off on %s %s (dynamic batch is used on CPU%s only)", e.type, e.device,
                        " and CUDA" if e.type == "onnxruntime" else "")
            return
        path = batched_graph(self.bundle.graph_path(precision), _cache_dir(e.cache_dir))
        if path is None:
            return
        try:
            backend = create_backend(e.type, path, device=e.device, threads=daemon_threads(e),
                                     precision_hint=e.precision_hint, cache_dir=_cache_dir(e.cache_dir),
                                     allow_fallback=e.allow_fallback)
        except EdgeError as err:  # the single-frame graph works: run without batching rather than not at all
            logger.warning("batching off: the batched graph does not load (%s)", err)
            return
        self.max_batch = min(e.max_batch, len(self.cfg.cameras))
        self.stepper = BatchStepper(self.bundle, backend, self.max_batch)
        logger.info("batching: up to %d cameras' frames per engine call", self.max_batch)

    def close(self, drain_s: float = 5.0) -> None:
        """Stop the cameras, end open events (delivered), drain and close the sinks, free the engine."""
        for s in self.streams:
            try:
                s.camera.stop()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                logger.exception("camera %s: error while stopping", s.name)
        now = time.time()
        for s in self.streams:
            self.emit(s, s.det.flush(max(now, s.last_ts)))
        self.close_clips(timeout=max(1.0, drain_s))
        deadline = time.monotonic() + drain_s  # the sinks drain in parallel (each has its worker): one deadline
        for sink in self.sinks:
            try:
                sink.close(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                logger.exception("sink %s: error while closing", sink.name)
        self.sinks.clear()
        self.streams.clear()
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        if self.stepper is not None:
            self.stepper.backend.close()
            self.stepper = None

    def close_clips(self, timeout: float = 5.0) -> None:
        """Stop feeding the clip recorders, write the clips they hold, stop the spool (stats stay)."""
        for s in self.streams:
            if s.rec is not None:
                s.camera.tap = None
                s.rec.flush()
        if self.spool is not None:
            self.spool.close(timeout=timeout)

    def emit(self, stream: Stream, events: list[dict[str, Any]]) -> None:
        """Journal each event (it gets its seq there), then hand it to the sinks."""
        for ev in events:
            ev = self.journal.append(ev)
            if ev["event"] == "start":
                stream.events += 1
                stream.by_label[ev["label"]] = stream.by_label.get(ev["label"], 0) + 1
            logger.debug("event %s", ev)
            for sink in self.sinks:
                sink.submit(ev)

    def step(self, stream: Stream, frame: Any) -> None:
        """One frame of one camera: reset after a gap, classify, update events, deliver."""
        self._before(stream, frame)
        t0 = time.perf_counter()
        self.step_started = time.monotonic()
        probs = stream.clf.step(frame.image) if frame.input is None else stream.clf.step_input(frame.input)
        self.step_started = 0.0
        self._after(stream, frame, probs, (time.perf_counter() - t0) * 1000)

    def step_batch(self, pairs: list[tuple[Stream, Any]]) -> None:
        """One frame each of several cameras in one engine call (see :mod:`edge.batching`)."""
        for stream, frame in pairs:
            self._before(stream, frame)
        t0 = time.perf_counter()
        self.step_started = time.monotonic()
        inputs = [f.input if f.input is not None else s.clf.preprocess(f.image) for s, f in pairs]
        probs = self.stepper.step([s.clf for s, _ in pairs], inputs)
        self.step_started = 0.0
        ms = (time.perf_counter() - t0) * 1000 / len(pairs)  # each camera's share of the call
        for (stream, frame), p in zip(pairs, probs, strict=False):
            self._after(stream, frame, p, ms)

    def _before(self, stream: Stream, frame: Any) -> None:
        if frame.gap and stream.classified:
            stream.clf.reset()
            self.emit(stream, stream.det.reset(frame.ts))
            if stream.rec is not None:
                stream.rec.reset_scores()

    def _after(self, stream: Stream, frame: Any, probs: Any, ms: float) -> None:
        if ms > self.cfg.engine.step_timeout_s * 1000:
            logger.warning("camera %s: one frame step took %.1f s (engine.step_timeout_s %g)", stream.name,
                           ms / 1000, self.cfg.engine.step_timeout_s)
        stream.infer_ms = ms if stream.classified == 0 else 0.95 * stream.infer_ms + 0.05 * ms
        stream.hist.observe(ms)
        stream.recent_ms.append(ms)
        stream.classified += 1
        stream.last_ts = frame.ts
        events = stream.det.update(probs, frame.ts)
        self.emit(stream, events)
        if stream.rec is not None:
            stream.rec.observe(frame.ts, probs, stream.det.smoothed, events)
        if self.on_first_frame is not None:  # once: the first classified frame of this pipeline
            first, self.on_first_frame = self.on_first_frame, None
            first()

    def healthy(self) -> tuple[bool, str]:
        """For the watchdog: is the pipeline making progress? (ok, why not)."""
        now = time.monotonic()
        limit = self.cfg.engine.step_timeout_s
        if self.step_started and now - self.step_started > limit:
            return False, f"a frame step has been running for {now - self.step_started:.0f} s (engine hung?)"
        if self.heartbeat and now - self.heartbeat > limit + 1.0:
            return False, f"the inference loop has not run for {now - self.heartbeat:.0f} s"
        for s in self.streams:
            if s.camera.error is not None:
                return False, f"camera {s.name}: capture thread failed"
            stuck = 3 * s.camera.cfg.stall_s
            if s.camera.state == "stalled" and s.last_frame and now - s.last_frame > stuck:
                return False, f"camera {s.name}: no frame for {now - s.last_frame:.0f} s and no reconnect"
        return True, ""

    def snapshot(self) -> dict[str, Any]:
        """Everything ``edge-tsm status`` and the Prometheus text show (see :mod:`edge.metrics`)."""
        b = self.backend
        cams = {}
        for s in self.streams:
            st = s.camera.stats()
            recent = sorted(s.recent_ms)
            cams[s.name] = {"state": st.get("state"), "fps": st.get("fps", 0.0),
                            "frames_read": st.get("frames_read", 0),
                            "classified": s.classified, "skipped": st.get("skipped", 0),
                            "reconnects": st.get("reconnects", 0), "decode_scale": st.get("decode_scale", 1),
                            "inference_ms": s.hist.snapshot(),
                            "inference_ms_p50": round(recent[len(recent) // 2], 3) if recent else 0.0,
                            "events": dict(s.by_label)}
        return {"model": self.bundle.name if self.bundle else self.cfg.model,
                "engine": f"{b.name} {b.device} {b.precision_note}" if b else "none",
                "uptime_s": round(time.monotonic() - self.started, 1), "time": time.time(),
                "interval_s": self.cfg.metrics.interval_s, "cameras": cams,
                "sinks": {sink.name: sink.stats() for sink in self.sinks},
                **({"clips": self.spool.stats()} if self.spool is not None else {}),
                "journal_last_seq": self.journal.last_seq}

    def status(self) -> str:
        """One line: per camera state, read fps, decisions, inference ms, events; per sink backlog."""
        b = self.backend
        parts = [f"{b.name} {b.device} {b.precision_note}" if b else "no engine"]
        for s in self.streams:
            st = s.camera.stats()
            parts.append(f"{s.name}: {st.get('state')} {st.get('fps', 0.0):.1f} fps, {s.classified} classified "
                         f"({st.get('skipped', 0)} stale skipped), {s.infer_ms:.1f} ms, {s.events} events")
        for sink in self.sinks:
            st = sink.stats()
            parts.append(f"sink {sink.name}: {st.get('state')} {st.get('delivered', 0)} sent, "
                         f"{st.get('pending', 0)} pending, {st.get('dropped', 0)} dropped")
        return "; ".join(parts)

    def run(self, stop: threading.Event, reload: threading.Event | None = None) -> str:
        """Serve the cameras until ``stop`` or ``reload`` is set or every camera has ended.

        Returns why it returned: 'stop', 'reload' or 'ended'.
        """
        for s in self.streams:
            s.camera.start()
        streams = self.streams
        n = len(streams)
        turn = 0
        next_status = time.monotonic() + self.cfg.status_interval_s if self.cfg.status_interval_s else None
        while True:
            self.heartbeat = time.monotonic()
            if stop.is_set():
                return "stop"
            if reload is not None and reload.is_set():
                return "reload"
            served = False
            if n == 1:
                f = streams[0].camera.get(timeout=0.1)
                if f is not None:
                    streams[0].last_frame = time.monotonic()
                    self.step(streams[0], f)
                    served = True
            else:
                # Round-robin from after the camera served last, one frame per camera: up to max_batch
                # ready frames go into one engine call (without batching, one frame per round).
                batch, last = [], 0
                for k in range(n):
                    s = streams[(turn + k) % n]
                    f = s.camera.get(timeout=0.0)
                    if f is not None:
                        s.last_frame = time.monotonic()
                        batch.append((s, f))
                        last = k
                        if len(batch) >= self.max_batch:
                            break
                if batch:
                    turn = (turn + last + 1) % n
                    served = True
                    if len(batch) == 1:
                        self.step(*batch[0])
                    else:
                        self.step_batch(batch)
            if not served:
                broken = next((s for s in streams if s.camera.error is not None), None)
                if broken is not None:  # a bug killed a capture thread: fail loudly, systemd restarts us
                    raise EdgeError(f"camera {broken.name}: capture thread failed: {broken.camera.error!r}")
                if all(s.camera.ended for s in streams):
                    return "ended"
                if n > 1:
                    stop.wait(0.003)
            if next_status is not None and time.monotonic() >= next_status:
                logger.info("status: %s", self.status())
                next_status = time.monotonic() + self.cfg.status_interval_s


def open_spool(cfg: Config, bundle: Bundle, precision: str, where: str = "config") -> ClipSpool:
    """The field-clip spool of config ``clips``: its folder, the model it names in each sidecar.

    Raises:
        ConfigError: no ``clips.dir`` and no state directory; a ``clips.labels`` entry not a model label.
        InputError: the folder cannot be written.
    """
    c = cfg.clips
    for name in c.labels or ():
        if name not in bundle.labels:
            raise ConfigError(f"{where}: clips.labels: {name!r} is not a label of model {bundle.name!r} "
                              f"(labels: {', '.join(bundle.labels)})")
    folder = Path(c.dir) if c.dir else (state_dir(cfg) / "clips" if state_dir(cfg) else None)
    if folder is None:
        raise ConfigError(f"{where}: clips: give clips.dir (or state_dir) for the clip spool")
    graph = bundle.graph_path(precision)
    model = {"name": bundle.name, "graph": graph.name, "precision": precision, "sha256": file_sha256(graph),
             "folder": str(bundle.root)}
    spool = ClipSpool(folder, c, model, bundle.labels)
    spool.open()
    return spool


def check(cfg: Config, where: str = "config") -> Pipeline:
    """Open everything ``run`` would open, then close it again; raises the first problem."""
    open_journal(cfg).close()  # the state directory must be writable
    p = Pipeline(cfg, where)
    p.open()
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
            from edge.errors import CaptureError
            raise CaptureError(f"camera {sorted(pending)[0]}: opened but delivered no frame within "
                               f"{max(c.stall_s for c in cfg.cameras):g} s")
    finally:
        p.close(drain_s=1.0)
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
        pipeline = Pipeline(cfg, where, journal)
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
                # journaled sinks keep what they could not deliver in the journal: a short drain will do
                pipeline.close(drain_s=1.5 if isinstance(journal, Journal) else 5.0)
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


def _announce(pipeline: Pipeline, notifier: Notifier) -> None:
    """READY=1 (with what runs where) after the pipeline's first classified frame."""
    b = pipeline.backend

    def ready() -> None:
        notifier.ready(f"ready: {pipeline.bundle.name if pipeline.bundle else '?'} on "
                       f"{b.name if b else '?'} {b.device if b else '?'} {b.precision_note if b else ''}, "
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
    fresh = Pipeline(new_cfg, where, running.journal)
    try:
        fresh.open()
    except EdgeError as e:
        logger.error("reload failed (%s); going back to the previous config", e)
        fresh = Pipeline(running.cfg, where, running.journal)
        fresh.open()  # if even that fails, the error ends the daemon (systemd restarts it)
    logger.info("reloaded in %.2f s", fresh.ready_s)
    return fresh
