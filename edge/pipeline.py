"""The one frame loop: cameras -> classifier -> events -> journal -> sinks.

Every consumer runs this loop: the daemon (:mod:`edge.daemon`), ``classify``, ``eval-events`` and
``run --demo`` (:mod:`edge.classify`, a lossless file camera) and the bench. They differ only in the
config they give it and in the callbacks they attach, as GStreamer probes attach to one pipeline:

* ``on_frame(camera, index, ts, probs)``: each classified frame (``index``: frames read from that
  camera since it opened, skipped ones included, so for a file its frame number; ``ts``: capture time);
* ``on_event(event, seq)``: each :class:`edge.events.Event` as it happens, with its journal ``seq``.

Threads: one capture thread per camera (latest-frame semantics for live sources, preprocessing
there), the journal's writer thread (disk writes and fsync, then the memory-fed sinks), one worker per
sink, and this loop in the caller's thread. It serves the cameras round-robin so one busy camera
cannot starve another, and with several cameras waits on a :class:`FrameSignal` the cameras notify
(no polling). All cameras share one compiled engine; each has its own states and event detector. A
capture gap (reconnect, file loop) resets that camera's states and ends its open event.

Opening is two steps, so a reload can build the next pipeline while this one serves: :meth:`prepare`
(model, engine, event settings, cameras and sinks constructed: no device taken) and :meth:`open_devices`
(clip spool, cameras, sinks). For the daemon (``late``) a camera that is not there at start waits for
its device (``at_start: retry``) while the others run; at a reload's handover nothing fails: a device
away at that moment is waited for (:mod:`edge.handover`). Health and figures: :mod:`edge.pipeline_status`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends import Backend, create_backend
from edge.batching import batched_graph
from edge.bundle import Bundle, load_bundle, validate_graph
from edge.capture import Camera, create_source
from edge.capture.base import Frame, FrameSignal
from edge.classifier import BatchStepper, OnlineClassifier
from edge.clips import ClipRecorder, ClipSpool, make_spool
from edge.config import Config, sink_names
from edge.errors import EdgeError
from edge.events import Event, EventDetector, EventSettings, event_settings
from edge.handover import LateSinks
from edge.metrics import StreamFigures
from edge.pipeline_status import PipelineStatus
from edge.preprocess import PreprocessRing, frame_need
from edge.sinks import Sink, create_sink

logger = logging.getLogger(__name__)

FrameCallback = Callable[[str, int, float, np.ndarray], None]
EventCallback = Callable[[Event, int], None]


def engine_threads(e: Any) -> int | None:
    """Engine threads: the config's, else 1 for ONNX Runtime on the CPU.

    Measured on the 2-core machine (docs/performance.md): one intra-op thread makes a step at most 8 %
    slower but cuts its CPU by 26 % and leaves the other core to the capture threads, so more cameras
    fit; a second thread buys almost no speed. OpenVINO keeps its own choice (its threads do not spin).
    """
    if e.threads:
        return e.threads
    return 1 if e.type == "onnxruntime" and e.device.upper() == "CPU" else None


def cache_dir(configured: str | None) -> Path | None:
    """The engine's compile cache: the config's, else systemd's CacheDirectory= ($CACHE_DIRECTORY)."""
    if configured:
        return Path(configured)
    env = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(env) if env else None


@dataclass
class Stream:
    """One camera's share of the pipeline."""

    name: str
    camera: Camera
    clf: OnlineClassifier
    det: EventDetector
    figures: StreamFigures = field(default_factory=StreamFigures)
    last_ts: float = 0.0
    last_frame: float = 0.0        # time.monotonic() of the last frame taken from the camera
    rec: ClipRecorder | None = None  # field clips (config ``clips``)


class Pipeline(PipelineStatus):
    """Everything one config opens. :meth:`open` fails before anything runs (``check`` uses it);
    :meth:`run` serves until stopped; :meth:`poll` serves one round (the bench steps it). ``late``: the
    daemon's pipeline, whose cameras honour ``at_start`` (classify and the bench fail on a missing file)."""

    def __init__(self, cfg: Config, journal: Any, where: str = "config", *, on_frame: FrameCallback | None = None,
                 on_event: EventCallback | None = None, clock_start: float | None = None, late: bool = False) -> None:
        self.cfg = cfg
        self.late = late
        self.where = where
        self.journal = journal      # edge.journal.Journal (the daemon) or MemoryJournal: gives each event its seq
        self.on_frame = on_frame
        self.on_event = on_event
        self.on_first_frame: Callable[[], None] | None = None   # once, after the first classified frame
        self.clock_start = clock_start
        self.bundle: Bundle | None = None
        self.backend: Backend | None = None
        self.settings: EventSettings | None = None
        self.streams: list[Stream] = []
        self.sinks: list[Sink] = []
        self.spool: ClipSpool | None = None
        self.stepper: BatchStepper | None = None  # several cameras' frames in one engine call
        self.max_batch = 1
        self.ready_s = 0.0          # seconds prepare() and open_devices() took
        self.prepare_s = 0.0
        self.heartbeat = 0.0        # time.monotonic() at the top of each loop round (a hung step stops it)
        self.started = time.monotonic()
        self.closed_snapshot: dict[str, Any] | None = None  # set by close(): the final figures
        self.step_started = 0.0     # time.monotonic() when the current step began, 0 between steps
        self.signal = FrameSignal()
        self._turn = 0
        self._memory_sinks: list[Sink] = []
        self._subscribed = False
        self._late_sinks: LateSinks | None = None  # a reload's handover: sinks opened in the background

    # --- open / close -------------------------------------------------------------------------------
    def open(self) -> None:
        """Load the model, compile and warm up the engine, open cameras and sinks (:meth:`prepare`, then
        :meth:`open_devices`).

        Raises:
            EdgeError: the first thing that cannot be opened (config 78, input 66, model 65, device 69).
                What was already opened is closed again.
        """
        try:
            self.prepare()
            self.open_devices()
        except BaseException:
            self.close(drain_s=0.0)
            raise

    def prepare(self) -> None:
        """What takes no device: the model, the engine (compiled, warmed up), the event settings, the clip
        spool's settings, the cameras and sinks constructed (not opened). The caller closes on failure.

        Raises:
            EdgeError: config 78, input 66, model 65, device 69 (the engine's).
        """
        t0 = time.perf_counter()
        cfg = self.cfg
        self.bundle = b = load_bundle(cfg.model)
        self.settings = event_settings(cfg.events, b, self.where)
        e = cfg.engine
        precision = e.precision or b.precision  # the bundle's default unless the config says
        if precision != b.precision:
            validate_graph(b, precision)
        self.backend = create_backend(e.type, b.graph_path(precision), device=e.device,
                                      threads=engine_threads(e), precision_hint=e.precision_hint,
                                      cache_dir=cache_dir(e.cache_dir), allow_fallback=e.allow_fallback)
        logger.info("model %s: %s graph %s (%s), %d labels, on %s %s, engine float precision %s, warm-up %.0f ms",
                    b.name, precision.upper(), b.graph_path(precision).name,
                    "set by engine.precision" if e.precision else "the bundle's default",
                    len(b.labels), self.backend.name, self.backend.device, self.backend.precision_note,
                    self.backend.warmup_s * 1000)
        self._open_batching(precision)
        if cfg.clips is not None:
            self.spool = make_spool(cfg, b, precision, self.where)
        for c in cfg.cameras:
            self.streams.append(self._make_stream(c))
        for s_cfg, name in zip(cfg.sinks, sink_names(cfg), strict=True):
            self.sinks.append(create_sink(s_cfg, name))
        self.prepare_s = time.perf_counter() - t0
        self.ready_s = self.prepare_s

    def open_devices(self, handover: bool = False) -> None:
        """Open the clip spool, the cameras and the sinks, and start delivering the journal's events.

        ``handover`` (a reload, after the running pipeline closed its devices): nothing fails here; a camera
        that does not open is waited for, a sink is opened in the background (:class:`LateSinks`), a clip
        spool that does not open is off until the next reload (each logged as one line).

        Raises:
            EdgeError: (not at a handover) a device that cannot be opened and is not waited for.
        """
        t0 = time.perf_counter()
        if self.spool is not None:
            try:
                self.spool.open()
            except EdgeError as e:
                if not handover:
                    raise
                logger.error("clips: %s; no field clips until the next reload or start", e)
                self._drop_clips()
        for s in self.streams:
            cam = s.camera
            why = "handed over at a reload" if handover else None
            away = cam.open_or_wait(why) if handover or self.late else cam.open()
            if away:
                logger.warning("%s", away)
        for sink in self.sinks:
            if sink.durable and hasattr(self.journal, "cursor"):
                sink.attach_journal(self.journal)
            else:
                self._memory_sinks.append(sink)  # a sink opened late queues what comes meanwhile
            try:
                sink.open()
            except EdgeError as e:
                if not handover:
                    raise
                self._late_sinks = self._late_sinks or LateSinks()
                self._late_sinks.add(sink, e)
        self.journal.subscribe(self._deliver)
        self._subscribed = True
        self.ready_s += time.perf_counter() - t0

    def _make_stream(self, c: Any) -> Stream:
        b, cfg = self.bundle, self.cfg
        t = b.temporal
        cam = Camera(c, rate_hz=t.fps / max(1, t.frame_stride), source=create_source(c), signal=self.signal,
                     clock_start=self.clock_start)
        cam.prepare = PreprocessRing(b.input)  # preprocessing runs in the capture thread
        stream = Stream(c.name, cam, OnlineClassifier(b, self.backend),
                        EventDetector(b.labels, self.settings, camera=c.name))
        if self.spool is not None and (cfg.clips.cameras is None or c.name in cfg.clips.cameras):
            stream.rec = ClipRecorder(c.name, cfg.clips, self.spool, b.labels, cfg.clips.fps or t.fps,
                                      lossless=not cam.source.live)
            cam.tap = stream.rec.tap
        w, h, short = frame_need(b.input)
        if stream.rec:  # the clips keep frames up to clips.width (null: as captured, so no reduced decode)
            w = max(w, cfg.clips.width or 1 << 16)
        cam.source.need = (w, h, short)
        return stream

    def _drop_clips(self) -> None:
        for s in self.streams:
            s.rec, s.camera.tap = None, None
        self.spool = None

    def add_sink(self, sink: Sink) -> None:
        """Open one more live sink (not from the config: the bench's null sink), fed like the config's."""
        sink.open()
        self.sinks.append(sink)
        self._memory_sinks.append(sink)

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        """The journal's writer thread: committed records to the memory-fed sinks."""
        for rec in records:
            for sink in self._memory_sinks:
                sink.submit(rec)

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
        path = batched_graph(self.bundle.graph_path(precision), cache_dir(e.cache_dir))
        if path is None:
            return
        try:
            backend = create_backend(e.type, path, device=e.device, threads=engine_threads(e),
                                     precision_hint=e.precision_hint, cache_dir=cache_dir(e.cache_dir),
                                     allow_fallback=e.allow_fallback)
        except EdgeError as err:  # the single-frame graph works: run without batching rather than not at all
            logger.warning("batching off: the batched graph does not load (%s)", err)
            return
        self.max_batch = min(e.max_batch, len(self.cfg.cameras))
        self.stepper = BatchStepper(self.bundle, backend, self.max_batch)
        logger.info("batching: up to %d cameras' frames per engine call", self.max_batch)

    def close(self, drain_s: float = 5.0) -> None:
        """Stop the cameras, end open events, commit them, drain and close the sinks, free the engine."""
        if self._late_sinks is not None:
            self._late_sinks.stop()
        for s in self.streams:
            try:
                s.camera.stop()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                logger.exception("camera %s: error while stopping", s.name)
        now = time.time()
        for s in self.streams:  # a file's clock (clock_start) ends open events at its last frame, not at wall time
            self.emit(s, s.det.flush(s.last_ts if self.clock_start is not None else max(now, s.last_ts)))
        self.close_clips(timeout=max(1.0, drain_s))
        deadline = time.monotonic() + drain_s
        self.journal.flush(timeout=max(1.0, drain_s))  # the sinks get every event of this pipeline
        if self._subscribed:
            self.journal.unsubscribe(self._deliver)
            self._subscribed = False
        for sink in self.sinks:  # the sinks drain in parallel (each has its worker): one deadline
            try:
                sink.close(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                logger.exception("sink %s: error while closing", sink.name)
        self.closed_snapshot = self.snapshot()  # the figures once all is delivered: the daemon's last status
        self.sinks.clear()
        self._memory_sinks.clear()
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

    # --- the loop -----------------------------------------------------------------------------------
    def emit(self, stream: Stream, events: list[Event]) -> None:
        """Journal each event (it gets its seq there; the sinks get it once committed), then the callback."""
        for ev in events:
            seq = self.journal.append(ev)
            stream.figures.event(ev)
            logger.debug("event %s seq %d", ev, seq)
            if self.on_event is not None:
                self.on_event(ev, seq)

    def start(self) -> None:
        """Start the capture threads (run() does it too)."""
        for s in self.streams:
            s.camera.start()

    def poll(self, timeout: float) -> int:
        """Serve one round: the next ready frame of each camera, round-robin from after the camera served
        last, up to ``max_batch`` in one engine call; waits up to ``timeout`` s for one. Returns how many
        frames it classified (0: none was ready in time).

        Raises:
            EdgeError: a capture thread died of a bug (systemd restarts the daemon).
        """
        streams, n = self.streams, len(self.streams)
        seen = self.signal.count()
        batch, last = [], 0
        for k in range(n):
            s = streams[(self._turn + k) % n]
            f = s.camera.get(timeout=timeout if n == 1 else 0.0)  # one camera: wait on it directly
            if f is not None:
                s.last_frame = time.monotonic()
                batch.append((s, f))
                last = k
                if len(batch) >= self.max_batch:
                    break
        if not batch:
            broken = next((s for s in streams if s.camera.error is not None), None)
            if broken is not None:  # a bug killed a capture thread: fail loudly
                raise EdgeError(f"camera {broken.name}: capture thread failed: {broken.camera.error!r}")
            if n > 1 and timeout > 0:
                self.signal.wait(seen, timeout)  # a camera that hands over a frame wakes us
            return 0
        self._turn = (self._turn + last + 1) % n
        if len(batch) == 1:
            self.step(*batch[0])
        else:
            self.step_batch(batch)
        return len(batch)

    @property
    def ended(self) -> bool:
        """Every camera reached its end (files that do not loop) and every frame was served."""
        return all(s.camera.ended for s in self.streams)

    def run(self, stop: threading.Event, reload: threading.Event | None = None) -> str:
        """Serve the cameras until ``stop`` or ``reload`` is set or every camera has ended.

        Returns why it returned: 'stop', 'reload' or 'ended'.
        """
        self.start()
        interval = self.cfg.status_interval_s
        next_status = time.monotonic() + interval if interval else None
        while True:
            self.heartbeat = time.monotonic()
            if stop.is_set():
                return "stop"
            if reload is not None and reload.is_set():
                return "reload"
            if not self.poll(0.1) and self.ended:
                return "ended"
            if next_status is not None and time.monotonic() >= next_status:
                logger.info("status: %s", self.status())
                next_status = time.monotonic() + interval

    def step(self, stream: Stream, frame: Frame) -> None:
        """One frame of one camera: reset after a gap, classify, update events, deliver."""
        self._before(stream, frame)
        t0 = time.perf_counter()
        self.step_started = time.monotonic()
        probs = stream.clf.step(frame.image) if frame.input is None else stream.clf.step_input(frame.input)
        self.step_started = 0.0
        self._after(stream, frame, probs, (time.perf_counter() - t0) * 1000)

    def step_batch(self, pairs: list[tuple[Stream, Frame]]) -> None:
        """One frame each of several cameras in one engine call (see :mod:`edge.batching`)."""
        for stream, frame in pairs:
            self._before(stream, frame)
        t0 = time.perf_counter()
        self.step_started = time.monotonic()
        inputs = [f.input if f.input is not None else s.clf.preprocess(f.image) for s, f in pairs]
        probs = self.stepper.step([s.clf for s, _ in pairs], inputs)
        self.step_started = 0.0
        ms = (time.perf_counter() - t0) * 1000 / len(pairs)  # each camera's share of the call
        for (stream, frame), p in zip(pairs, probs, strict=True):
            self._after(stream, frame, p, ms)

    def _before(self, stream: Stream, frame: Frame) -> None:
        if frame.gap and stream.figures.classified:
            stream.clf.reset()
            self.emit(stream, stream.det.reset(frame.ts))
            if stream.rec is not None:
                stream.rec.reset_scores()

    def _after(self, stream: Stream, frame: Frame, probs: np.ndarray, ms: float) -> None:
        """The one place per frame where probabilities become events."""
        if ms > self.cfg.engine.step_timeout_s * 1000:
            logger.warning("camera %s: one frame step took %.1f s (engine.step_timeout_s %g)", stream.name,
                           ms / 1000, self.cfg.engine.step_timeout_s)
        stream.figures.frame(ms)
        stream.last_ts = frame.ts
        if self.on_frame is not None:
            self.on_frame(stream.name, frame.index, frame.ts, probs)
        events = stream.det.update(probs, frame.ts)
        self.emit(stream, events)
        if stream.rec is not None:
            stream.rec.observe(frame.ts, probs, stream.det.smoothed, events)
        if self.on_first_frame is not None:  # once: the first classified frame of this pipeline
            first, self.on_first_frame = self.on_first_frame, None
            first()
