"""``edge-tsm bench``: per-stage and whole-pipeline figures, measured side by side in one run.

Three phases, each on the same generated 640x480 MJPG clip (a camera's frames: rendered motion,
upscaled, with sensor-like noise):

1. **Interleaved rounds** (:func:`edge.bench.kit.interleave`, as :mod:`edge.bench.int8`: everything
   compiled first, then the variants take turns, ``steps`` items each, for ``rounds`` rounds, the
   starting variant rotating, so a load change on the machine hits every variant alike): decode (the
   daemon's own :class:`edge.capture.opencv.FileSource`), preprocessing (:class:`Preprocessor`), the
   bare engine step of every engine and precision (:meth:`OnlineClassifier.step_input`), the
   PyTorch-eager online network when torch is there, and the whole pipeline per frame (a real
   :class:`edge.pipeline.Pipeline` with a lossless file camera, its capture thread, the event detector
   and a :class:`NullSink`). Wall and process CPU time per item; figures are medians over rounds, and
   every ratio is one of those medians over another (so it can be checked from the figures shown).
2. **Streams**: N realtime (30 fps) file cameras in one Pipeline for ``seconds``, N searched upward;
   a count passes when every camera had >= 99 % of its frames classified.
3. **Daemon runs**: ``python -m edge run`` in a subprocess, twice per engine with one compile cache:
   time to READY=1 (sent after the first classified frame; first and second start), then CPU share
   and peak RSS of one realtime stream, read from /proc, so the bench's own allocations do not count.

By default every camera frame goes to the model (a copy of the bundle whose decision rate is the
camera's): the strict reading of "30 fps streams". ``model_rate`` keeps the bundle's own rate, as
the daemon runs it. Not a test: a measurement; nothing here passes or fails.
"""
from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.backends import ENGINES, available_engines, create_backend
from edge.batching import batched_graph
from edge.bench.kit import (
    CHATTY_EVENTS,
    SUSTAINED,
    DecodeStage,
    Variant,
    bench_config,
    daemon_run,
    find_streams,
    interleave,
    open_pipeline,
    pipeline_variant,
    quantized_copy,
    rate_copy,
    streams_trial,
    torch_variant,
    write_clip,
)
from edge.bundle import Bundle, load_bundle
from edge.classifier import BatchStepper, OnlineClassifier
from edge.config import EngineConfig
from edge.cpu import isa_text, machine  # machine also as edge.bench.machine (quantize's guard record reads it there)
from edge.errors import DeviceError, UsageError
from edge.pipeline import Pipeline
from edge.preprocess import Preprocessor, frame_need

logger = logging.getLogger(__name__)


@dataclass
class BenchOptions:
    model: str = "default"
    engines: list[str] | None = None     # default: every installed engine
    precision: str | None = None         # pipeline/streams/daemon runs; default int8 when the bundle has it
    threads: int | None = None           # engine (and torch) threads; None: the daemon's default (ORT CPU 1)
    size: tuple[int, int] = (640, 480)   # camera frame (w, h)
    fps: float = 30.0
    seconds: float = 5.0                 # per streams trial and per realtime daemon run
    rounds: int = 20
    steps: int = 20
    max_streams: int = 32
    max_batch: int | None = None         # engine.max_batch for the streams and daemon runs (None: the daemon's, 4)
    batch: int = 4                       # the batched engine-step variants (0: none)
    decode_scale: str | int = "auto"     # camera.decode_scale everywhere (MJPG decoded at 1/N)
    model_rate: bool = False
    int8_from_calib: str | None = None   # 'synth' or a calibration set folder: quantize a copy if no int8
    torch: bool = True
    torch_skip: str = "--no-torch"       # why the PyTorch-eager row is left out when torch is False
    daemon: bool = True
    daemon_engines: int | None = None    # daemon runs for the first N engines only (None: all)
    clip_seconds: float = 18.0
    warmup_s: float = 1.0
    work_dir: str | None = None


def tiny_options(model: str, **kw: Any) -> BenchOptions:
    """A setting that finishes in seconds (CI): few rounds, short trials, at most 2 streams, one daemon engine."""
    base = dict(model=model, seconds=0.5, rounds=3, steps=4, max_streams=2, clip_seconds=3.0, warmup_s=0.3,
                torch=False, torch_skip="--tiny leaves it out (run without --tiny to measure it)", daemon_engines=1)
    base.update(kw)
    return BenchOptions(**base)


def _med(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3)


def _ratio(num: list[float], den: list[float]) -> float | None:
    """The median of ``num`` over the median of ``den`` (None when that is 0): the ratio of two figures
    the report shows."""
    d = statistics.median(den)
    return round(float(statistics.median(num) / d), 3) if d > 0 else None


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """All three phases; the result is the ``--json`` object.

    Raises:
        UsageError: a bad option (engine, precision, size). DeviceError: no engine installed.
        EdgeError: the model, the clip or the daemon fails.
    """
    t_start = time.perf_counter()
    engines = opts.engines or available_engines()
    if not engines:
        raise DeviceError("bench: no engine installed: pip install edge-tsm[onnxruntime] (or [openvino])")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise UsageError(f"--engines: {unknown[0]!r} is not one of {', '.join(ENGINES)}")
    if opts.rounds < 1 or opts.steps < 1 or opts.seconds <= 0 or opts.max_streams < 1:
        raise UsageError("bench: rounds, steps, seconds and streams must be positive")
    if opts.max_batch is not None and not 1 <= opts.max_batch <= 64:
        raise UsageError(f"--max-batch {opts.max_batch}: allowed 1..64")
    if opts.batch and (opts.batch < 2 or opts.steps % opts.batch):
        raise UsageError(f"bench: the batched step needs a batch >= 2 that divides --steps {opts.steps} "
                         f"(got {opts.batch}); 0 turns it off")
    work = Path(tempfile.mkdtemp(prefix="edge-tsm-bench-", dir=opts.work_dir))
    try:
        bundle = load_bundle(opts.model)
        int8_source = "the bundle's files.int8" if "int8" in bundle.files else None
        if int8_source is None and opts.int8_from_calib:
            logger.info("bench: %s has no INT8 graph; quantizing a copy (%s)", bundle.name, opts.int8_from_calib)
            root, int8_source = quantized_copy(opts.model, opts.int8_from_calib, work)
            bundle = load_bundle(root)
        precision = opts.precision or ("int8" if "int8" in bundle.files else bundle.precision)
        if precision not in bundle.files:
            raise UsageError(f"--precision {precision}: the bundle has no such graph "
                             f"(it has: {', '.join(bundle.files)})")
        precisions = [p for p in ("fp32", "int8") if p in bundle.files]
        clip = work / "clip.avi"
        clip_info = write_clip(clip, opts.size, opts.fps, max(opts.clip_seconds, 2 * opts.steps / opts.fps))
        every = rate_copy(bundle, work / "every-frame", opts.fps)
        res: dict[str, Any] = {
            "model": bundle.name, "input": list(bundle.input.size), "machine": machine(), "engines": engines,
            "precision": precision, "threads": opts.threads or "the daemon's default (onnxruntime 1, openvino its own)",
            "max_batch": opts.max_batch or "the daemon's default (4)", "int8_source": int8_source,
            "clip": clip_info, "rounds": opts.rounds, "steps": opts.steps}
        res.update(_phase_rounds(opts, bundle, engines, precisions, precision, clip, every))
        res.update(_phase_streams(opts, bundle.root if opts.model_rate else every, clip, engines[0], precision,
                                  bundle))
        res.update(_phase_daemon(opts, bundle.root if opts.model_rate else every, clip, engines, precision, work))
        res["seconds_total"] = round(time.perf_counter() - t_start, 1)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _phase_rounds(opts: BenchOptions, bundle: Bundle, engines: list[str], precisions: list[str], precision: str,
                  clip: Path, every: Path) -> dict[str, Any]:
    logger.info("bench: compiling %s; then %d interleaved rounds", ", ".join(f"{e} {p}" for e in engines
                                                                            for p in precisions), opts.rounds)
    dec = DecodeStage(clip, opts.decode_scale, frame_need(bundle.input))  # as the daemon's file camera
    full = DecodeStage(clip, 1)
    frames = dec.frames(8)
    scale = dec.scale
    pre = Preprocessor(bundle.input)
    x = pre(frames[0]).copy()

    def preprocess(n: int) -> None:
        for i in range(n):
            pre(frames[i % len(frames)])
    variants = [Variant("decode", dec.run, dec.before), Variant("preprocess", preprocess)]
    if scale > 1:
        variants.append(Variant("decode_full", full.run, full.before))
    clfs: list[OnlineClassifier] = []
    p: Pipeline | None = None
    try:
        for eng in engines:
            for prec in precisions:
                eng_threads = opts.threads or (1 if eng == "onnxruntime" else None)  # as the daemon
                clf = OnlineClassifier(bundle, create_backend(eng, bundle.graph_path(prec), threads=eng_threads,
                                                              precision_hint="f32"))
                clfs.append(clf)

                def step(n: int, c: OnlineClassifier = clf) -> None:
                    for _ in range(n):
                        c.step_input(x)
                variants.append(Variant(f"{eng}/{prec}", step))
                if opts.batch:
                    bv = _batched_variant(bundle, eng, prec, eng_threads, x, opts.batch, clfs)
                    if bv is not None:
                        variants.append(bv)
        tv, torch_info = (torch_variant(bundle, x, opts.threads) if opts.torch
                          else (None, {"note": f"skipped: {opts.torch_skip}"}))
        if tv is not None:
            variants.append(tv)
        cam = [{"name": "file", "source": str(clip), "loop": True}]
        p, _sink, counter = open_pipeline(bench_config(every, engines[0], precision, opts.threads, cam,
                                                       decode_scale=opts.decode_scale))
        pipe = pipeline_variant(p, counter)
        variants.append(pipe)
        interleave(variants, opts.rounds, opts.steps)
    finally:
        if p is not None:
            p.close(drain_s=1.0)
        for c in clfs:
            c.backend.close()
        dec.close()
        full.close()
    by = {v.name: v for v in variants}
    main_engine = by[f"{engines[0]}/{precision}"]
    stages_cpu = [statistics.median(v.cpu) for v in (by["decode"], by["preprocess"], main_engine)]
    out: dict[str, Any] = {
        "decode_scale": scale,
        "decode_ms": _med(by["decode"].wall),
        "decode_full_ms": _med(by["decode_full"].wall) if scale > 1 else _med(by["decode"].wall),
        "preprocess_ms": _med(by["preprocess"].wall),
        "engine_ms": {e: {pr: _med(by[f"{e}/{pr}"].wall) for pr in precisions} for e in engines},
        "pipeline_cpu_ms_per_frame": _med(pipe.cpu),
        "pipeline_wall_ms_per_frame": _med(pipe.wall),
        "cpu_ms": {"decode": _med(by["decode"].cpu), "preprocess": _med(by["preprocess"].cpu),
                   "engine": {e: {pr: _med(by[f"{e}/{pr}"].cpu) for pr in precisions} for e in engines},
                   "engine_batched": {e: {pr: _med(by[f"{e}/{pr}/b{opts.batch}"].cpu) for pr in precisions
                                          if f"{e}/{pr}/b{opts.batch}" in by} for e in engines}},
        "overhead_ratio": _ratio(pipe.cpu, [sum(stages_cpu)]),
        "overhead_of": f"pipeline CPU per frame / (decode + preprocess + {engines[0]} {precision}) CPU, "
                       "every frame to the model",
        "int8_over_fp32": {e: (_ratio(by[f"{e}/int8"].wall, by[f"{e}/fp32"].wall) if len(precisions) == 2 else None)
                           for e in engines},
        "batch": opts.batch,
        "engine_batched_ms": {e: {pr: _med(by[f"{e}/{pr}/b{opts.batch}"].wall) for pr in precisions
                                  if f"{e}/{pr}/b{opts.batch}" in by} for e in engines} if opts.batch else {},
        "int8_over_fp32_batched": {e: (_ratio(by[f"{e}/int8/b{opts.batch}"].wall, by[f"{e}/fp32/b{opts.batch}"].wall)
                                       if f"{e}/int8/b{opts.batch}" in by and f"{e}/fp32/b{opts.batch}" in by
                                       else None) for e in engines} if opts.batch else {},
        "torch_eager_ms": None, "daemon_over_torch": None, "torch": torch_info,
    }
    if tv is not None:
        out["torch_eager_ms"] = _med(tv.wall)
        out["daemon_over_torch"] = _ratio(pipe.wall, tv.wall)
        torch_info.update(cpu_ms=_med(tv.cpu), daemon_over_torch_cpu=_ratio(pipe.cpu, tv.cpu))
    return out


def _batched_variant(bundle: Bundle, eng: str, prec: str, threads: int | None, x: Any, batch: int,
                     clfs: list[OnlineClassifier]) -> Variant | None:
    """``batch`` cameras' frames in one call of the batched graph, as the daemon steps several cameras;
    timed per frame. None when the graph is not safe to batch (logged by batched_graph)."""
    path = batched_graph(bundle.graph_path(prec))
    if path is None:
        return None
    backend = create_backend(eng, path, threads=threads, precision_hint="f32")
    stepper = BatchStepper(bundle, backend, batch)  # as the daemon makes it
    cams = [OnlineClassifier(bundle, backend) for _ in range(batch)]  # state holders; the stepper runs them
    clfs.append(cams[0])  # closes the backend at the end
    inputs = [x] * batch

    def run(n: int) -> None:
        for _ in range(n // batch):
            stepper.step(cams, inputs)
    return Variant(f"{eng}/{prec}/b{batch}", run)


def _phase_streams(opts: BenchOptions, model: Path, clip: Path, engine: str, precision: str,
                   bundle: Bundle) -> dict[str, Any]:
    rate = bundle.temporal.fps / max(1, bundle.temporal.frame_stride) if opts.model_rate else opts.fps
    logger.info("bench: streams at %g fps, %g frames/s each to the model, %g s per count", opts.fps,
                min(rate, opts.fps), opts.seconds)
    best, trials = find_streams(lambda n: streams_trial(model, clip, n, engine, precision, opts.threads,
                                                        opts.seconds, opts.warmup_s, opts.max_batch,
                                                        opts.decode_scale),
                                opts.max_streams)
    shown = [t for t in trials if t["streams"] == max(best, 1)][-1]   # the trial that decided it
    lat = dict(shown["event_latency_ms"], streams=shown["streams"])
    return {"streams": best, "event_latency_ms": lat,
            "streams_detail": {"fps": opts.fps, "to_model_hz": min(rate, opts.fps), "engine": engine,
                               "precision": precision, "seconds": opts.seconds,
                               "max_batch": opts.max_batch or EngineConfig.model_fields["max_batch"].default,
                               "max_tried": opts.max_streams,
                               "sustained_if": f">= {SUSTAINED:.0%} of every camera's frames classified",
                               "events": "chatty settings: " + ", ".join(f"{k} {v}" for k, v in CHATTY_EVENTS.items()),
                               "trials": trials}}


def _phase_daemon(opts: BenchOptions, model: Path, clip: Path, engines: list[str], precision: str,
                  work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_mb": {}, "ready_s": {}, "stream_cpu_pct": {}}
    if not opts.daemon:
        return out
    for eng in engines[:opts.daemon_engines]:
        cam = [{"name": "cam0", "source": str(clip), "realtime": True, "loop": True}]
        data = bench_config(model, eng, precision, opts.threads, cam, decode_scale=opts.decode_scale,
                            sinks=[{"type": "log", "path": str(work / f"events-{eng}.jsonl")}])
        data["engine"]["cache_dir"] = str(work / f"cache-{eng}")
        del data["events"]  # the daemon's defaults for the bundle
        cfg = work / f"daemon-{eng}.yaml"
        cfg.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        logger.info("bench: daemon with %s: first start, second start, then %g s of one stream", eng, opts.seconds)
        first = daemon_run(cfg, 0.0, work)
        second = daemon_run(cfg, opts.seconds, work)
        out["ready_s"][eng] = {"first": first["ready_s"], "second": second["ready_s"]}
        out["rss_mb"][eng] = second["rss_mb"]
        out["stream_cpu_pct"][eng] = second["cpu_pct"]
    return out


# --- report --------------------------------------------------------------------------------------------
def format_table(r: dict[str, Any]) -> str:
    """The result as a plain-text table (what ``edge-tsm bench`` prints without --json)."""
    h, w = r["input"]
    c = r["clip"]
    lines = [f"edge-tsm bench: model {r['model']} {h}x{w}, {isa_text(r['machine'])}, {r['machine']['cores']} cores, "
             f"threads {r['threads']}",
             f"clip {c['size'][0]}x{c['size'][1]} MJPG {c['fps']:g} fps ({c['kb_per_frame']} KB/frame); "
             f"{r['rounds']} interleaved rounds x {r['steps']} items; medians",
             "", f"{'per frame':<44} {'wall ms':>8} {'cpu ms':>8}",
             f"{'decode MJPG' + (f' at 1/{sc}' if (sc := r.get('decode_scale', 1)) > 1 else ''):<44} "
             f"{r['decode_ms']:8.3f} {r['cpu_ms']['decode']:8.3f}",
             f"{'preprocess':<44} {r['preprocess_ms']:8.3f} {r['cpu_ms']['preprocess']:8.3f}"]
    if r.get("decode_scale", 1) > 1:
        lines.insert(-1, f"{'  (decoded in full: ' + str(r['decode_full_ms']) + ' ms)':<44}")
    batched = r.get("engine_batched_ms", {})
    for e, by in r["engine_ms"].items():
        for p, ms in by.items():
            lines.append(f"{'engine step ' + e + ' ' + p:<44} {ms:8.3f} {r['cpu_ms']['engine'][e][p]:8.3f}")
            if p in batched.get(e, {}):
                lines.append(f"{'  the same, ' + str(r['batch']) + ' cameras per call':<44} "
                             f"{batched[e][p]:8.3f} {r['cpu_ms']['engine_batched'][e][p]:8.3f}")
    if r["torch_eager_ms"] is not None:
        t = r["torch"]
        lines.append(f"{'PyTorch eager OnlineTSM (' + str(t['threads']) + ' threads)':<44} "
                     f"{r['torch_eager_ms']:8.3f} {t['cpu_ms']:8.3f}")
    else:  # say so rather than drop the row: a reader compares against it
        note = str(r.get("torch", {}).get("note", "not measured"))
        lines.append(f"{'PyTorch eager OnlineTSM':<44} {'-':>8} {'-':>8}  "
                     f"{note if note.startswith('skipped') else 'skipped: ' + note}")
    lines.append(f"{'whole pipeline (' + r['engines'][0] + ' ' + r['precision'] + ')':<44} "
                 f"{r['pipeline_wall_ms_per_frame']:8.3f} {r['pipeline_cpu_ms_per_frame']:8.3f}")
    ratios = [f"overhead_ratio {r['overhead_ratio']:.2f}"] if r["overhead_ratio"] is not None else []
    ratios += [f"int8/fp32 {e} {v:.2f}" for e, v in r["int8_over_fp32"].items() if v is not None]
    ratios += [f"int8/fp32 {e} batch {r['batch']} {v:.2f}" for e, v in r.get("int8_over_fp32_batched", {}).items()
               if v is not None]
    if r["daemon_over_torch"] is not None:
        ratios.append(f"daemon/torch {r['daemon_over_torch']:.2f}")
    lines += ["", "ratios (of the medians above): " + ", ".join(ratios)]
    sd, lat = r["streams_detail"], r["event_latency_ms"]
    lat_text = f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms ({lat['n']} events)" if lat["n"] else "no events"
    lines.append(f"streams: {r['streams']} x {sd['fps']:g} fps ({sd['to_model_hz']:g} frames/s each to the model, "
                 f"{sd['engine']} {sd['precision']}); capture-to-sink latency at {lat['streams']}: {lat_text}")
    for e in r["ready_s"]:
        lines.append(f"daemon {e}: ready {r['ready_s'][e]['first']:.2f} s (first start), "
                     f"{r['ready_s'][e]['second']:.2f} s (second); one stream {r['stream_cpu_pct'][e]:.1f} % of a "
                     f"core; peak RSS {r['rss_mb'][e]:.0f} MB")
    lines.append(f"({r['seconds_total']:.0f} s)")
    return "\n".join(lines)
