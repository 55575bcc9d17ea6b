"""The measuring parts of ``edge-tsm bench`` (:mod:`edge.bench` runs them and reports).

* inputs: a camera-like MJPG clip, a copy of a bundle that classifies every camera frame, an INT8 copy;
* interleaved rounds: :class:`Variant` and :func:`interleave` (the one scheduler of timed variants, used
  by :mod:`edge.bench.int8` too), the daemon's own file source as the decode stage, the daemon's
  :class:`Pipeline` with a frame counter, the PyTorch-eager network;
* live runs: N realtime cameras in one pipeline; the daemon itself in a subprocess.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edge.bench.nullsink import NullSink
from edge.bundle import Bundle
from edge.capture.opencv import FileSource
from edge.config import CameraConfig, config_from_data
from edge.errors import InputError, ModelError
from edge.journal import MemoryJournal
from edge.pipeline import Pipeline

logger = logging.getLogger(__name__)

SUSTAINED = 0.99          # fraction of a camera's frames that must be classified for a stream count to pass
# Event settings that make many events out of any model's scores (no smoothing, low thresholds, nothing
# ignored), so the capture-to-sink latency has samples; more event traffic than a real deployment has.
CHATTY_EVENTS = {"window": 1, "enter": 0.25, "exit": 0.2, "min_frames": 1, "cooldown_s": 0.0, "ignore": []}


# --- inputs --------------------------------------------------------------------------------------------
def write_clip(path: Path, size: tuple[int, int], fps: float, seconds: float, seed: int = 7) -> dict[str, Any]:
    """A camera-like MJPG clip: the demo's motions (edge.demo) upscaled to ``size``, plus sensor-like noise
    (sigma 3 grey levels), written by OpenCV's own MJPG encoder (quality 95): about 55 KB per 640x480
    frame, as a USB camera's MJPG stream at that size. Decoding cost grows with the bytes per frame.

    Raises:
        InputError: OpenCV cannot write MJPG here.
    """
    from edge.data.synth import render_clip
    from edge.demo import DEMO_SCRIPT
    vw = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not vw.isOpened():
        raise InputError(f"bench clip {path}: cannot be written (OpenCV's MJPG writer failed)")
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0, 3, (size[1], size[0], 3)).round().astype(np.int16) for _ in range(5)]
    motion, still = round(1.6 * fps), round(1.2 * fps)   # the demo's 24 and 18 frames at 15 fps
    total, n, k = max(1, round(seconds * fps)), 0, 0
    try:
        while n < total:
            label = "no_motion" if k % 2 == 0 else DEMO_SCRIPT[(k // 2) % len(DEMO_SCRIPT)]
            for f in render_clip(label, rng, frames=still if k % 2 == 0 else motion, difficulty=0.3):
                big = cv2.resize(f, size, interpolation=cv2.INTER_LINEAR).astype(np.int16) + noise[n % len(noise)]
                vw.write(np.clip(big, 0, 255).astype(np.uint8))
                n += 1
                if n >= total:
                    break
            k += 1
    finally:
        vw.release()
    return {"size": list(size), "fps": fps, "frames": n, "kb_per_frame": round(path.stat().st_size / n / 1024, 1)}


def rate_copy(bundle: Bundle, out: Path, fps: float) -> Path:
    """A copy of ``bundle`` whose decision rate is ``fps`` (every camera frame to the model); graphs linked."""
    out.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load(bundle.yaml_path.read_text(encoding="utf-8"))
    spec["temporal"] = {**spec.get("temporal", {}), "fps": float(fps), "frame_stride": 1}
    (out / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    for name in bundle.files.values():
        (out / name).symlink_to((bundle.root / name).resolve())
    return out


def quantized_copy(model: str, calib: str, work: Path) -> tuple[Path, str]:
    """``model`` with an INT8 graph made here (``calib``: a calibration set folder or 'synth'); not the default."""
    from edge.calibration.pipeline import run_quantize
    from edge.calibration.quantize import fp32_bundle
    if calib == "synth":
        from edge.calibration.collect import collect_synth
        calib_dir = work / "calib"
        collect_synth(calib_dir, fp32_bundle(model), per_class=2, seed=2, max_frames=200)
        calib, how = str(calib_dir), "synthetic calibration set (seed 2, 2 clips per class)"
    else:
        how = f"calibration set {calib}"
    res = run_quantize(model, calib, out=work / "int8-bundle")
    return Path(res["bundle"]), f"quantized here by edge-tsm quantize from a {how}"


# --- interleaved rounds --------------------------------------------------------------------------
@dataclass
class Variant:
    """One thing timed per round: ``run(n)`` does n items; ``before``/``after`` are outside the clock."""

    name: str
    run: Callable[[int], None]
    before: Callable[[int], None] = lambda n: None
    after: Callable[[int], None] = lambda n: None
    wall: list[float] = field(default_factory=list)   # ms per item, one value per round
    cpu: list[float] = field(default_factory=list)


def interleave(variants: list[Variant], rounds: int, steps: int) -> None:
    """Settle each variant once, then ``rounds`` rounds in a rotating order; fills wall/cpu (ms per item)."""
    for v in variants:
        v.before(steps)
        v.run(steps)
        v.after(steps)
    for r in range(rounds):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            v.before(steps)
            w0, c0 = time.perf_counter(), time.process_time()
            v.run(steps)
            v.after(steps)
            v.wall.append((time.perf_counter() - w0) * 1e3 / steps)
            v.cpu.append((time.process_time() - c0) * 1e3 / steps)


class DecodeStage:
    """The clip decoded frame by frame by the daemon's own file source (:class:`FileSource`: MJPG decoded
    at 1/N when ``decode_scale`` and the model's ``need`` allow, as the daemon's file camera); reopened
    (off the clock) before a round would reach the end of the file."""

    def __init__(self, path: Path, decode_scale: str | int = "auto", need: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.path = path
        self.source = FileSource(CameraConfig(name="bench", source=str(path), type="file",
                                              decode_scale=decode_scale), str(path))
        self.source.need = need
        self.left = 0

    @property
    def scale(self) -> int:
        """The JPEG decoder's scale the source chose (valid once opened)."""
        return self.source.scale

    def before(self, n: int) -> None:
        if self.left < n:
            self.source.open()
            # open() decodes the first frame to check the file; take it off the clock too
            self._read()
            self.left = self.source.frame_count - 1
            if self.left < n:
                raise InputError(f"bench clip {self.path}: {self.source.frame_count} frames, fewer than "
                                 f"--steps {n} + 1")

    def _read(self) -> np.ndarray:
        img = self.source.read()
        if img is None:
            raise InputError(f"bench clip {self.path}: decoding failed")
        return img

    def run(self, n: int) -> None:
        for _ in range(n):
            self._read()
        self.left -= n

    def frames(self, n: int) -> list[np.ndarray]:
        self.before(n)
        out = [self._read() for _ in range(n)]
        self.left -= n
        return out

    def close(self) -> None:
        self.source.close()


@dataclass
class FrameCounter:
    """The bench's per-frame callback (:attr:`Pipeline.on_frame`): counts classified frames and keeps
    each one's capture-to-classified latency (meaningful for live cameras)."""

    done: int = 0
    frame_latency_ms: list[float] = field(default_factory=list)

    def on_frame(self, _camera: str, _index: int, ts: float, _probs: Any) -> None:
        self.frame_latency_ms.append((time.time() - ts) * 1e3)
        self.done += 1


def bench_config(model: Path, engine: str, precision: str, threads: int | None, cameras: list[dict[str, Any]],
                 max_batch: int | None = None, decode_scale: str | int = "auto", **extra: Any) -> dict[str, Any]:
    """A daemon config (as data) for the bench's pipelines and daemon runs."""
    cameras = [dict(c, decode_scale=decode_scale) for c in cameras]
    eng = {"type": engine, "precision": precision, **({"threads": threads} if threads else {}),
           **({"max_batch": max_batch} if max_batch else {})}
    return {"model": str(model), "engine": eng, "cameras": cameras, "events": CHATTY_EVENTS, "sinks": [],
            "status_interval_s": 0, **extra}


def open_pipeline(data: dict[str, Any]) -> tuple[Pipeline, NullSink, FrameCounter]:
    """Open the daemon's Pipeline for config ``data`` (events numbered in memory), with a FrameCounter on its
    per-frame callback and a NullSink fed like a live sink (its event callback gives the sink each
    event's capture time)."""
    counter, sink = FrameCounter(), NullSink()
    p = Pipeline(config_from_data(data, "bench config"), MemoryJournal(), "bench config",
                 on_frame=counter.on_frame, on_event=sink.expect)
    p.open()
    try:
        p.add_sink(sink)  # closed with the pipeline's sinks
    except BaseException:
        p.close(drain_s=0)
        raise
    return p, sink, counter


def run_frames(p: Pipeline, counter: FrameCounter, n: int, timeout_s: float = 30.0) -> None:
    """Serve until ``n`` more frames are classified: the daemon's own loop, stepped with :meth:`Pipeline.poll`.

    Raises:
        ModelError: the cameras ended or nothing was classified for ``timeout_s``.
    """
    target = counter.done + n
    p.start()
    last, since = counter.done, time.monotonic()
    while counter.done < target:
        if p.poll(1.0):
            last, since = counter.done, time.monotonic()
        elif p.ended or time.monotonic() - since > timeout_s:
            raise ModelError(f"bench: the pipeline stopped after {counter.done - last} of {n} frames")


def pipeline_variant(p: Pipeline, counter: FrameCounter) -> Variant:
    """Per frame of the whole pipeline. The lossless camera decodes ahead into a 2-frame queue; a round
    ends once the camera has decoded as many frames as were classified, so each round is charged
    exactly its own decodes."""
    cam = p.streams[0].camera
    mark = [0]

    def before(n: int) -> None:
        mark[0] = cam.stats()["frames_read"]

    def after(n: int) -> None:
        deadline = time.monotonic() + 5.0
        while cam.stats()["frames_read"] - mark[0] < n and time.monotonic() < deadline:
            time.sleep(0.0005)
    return Variant("pipeline", lambda n: run_frames(p, counter, n), before, after)


def torch_variant(bundle: Bundle, x: np.ndarray, threads: int | None) -> tuple[Variant | None, dict[str, Any]]:
    """The same network as PyTorch eager (edge.models.tsm.OnlineTSM, eval, no_grad), states fed back."""
    if bundle.arch != "mobilenetv2_tsm" or bundle.kind != "online":
        return None, {"note": f"no PyTorch form of arch {bundle.arch!r} ({bundle.kind})"}
    try:
        import torch

        from edge.models.tsm import OnlineTSM, TSMNet
    except ImportError as e:
        return None, {"note": f"torch is not installed ({e.name}): pip install 'edge-tsm[train]'"}
    if threads:
        torch.set_num_threads(threads)
    net = TSMNet(bundle.num_classes, width=bundle.width or 1.0, shift=bundle.temporal.shift).eval()
    shapes = net.state_shapes(bundle.input.size)
    if [tuple(s) for s in shapes] != [tuple(s.shape) for s in bundle.states]:
        return None, {"note": "the PyTorch network's states differ from the bundle's; not comparable"}
    online = OnlineTSM(net).eval()
    frame = torch.from_numpy(x.copy())
    states = [tuple(torch.zeros(s) for s in shapes)]

    def run(n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                out = online(frame, *states[0])
                states[0] = out[1:]
                torch.softmax(out[0], 1)
    return Variant("torch_eager", run), {"threads": torch.get_num_threads(), "version": torch.__version__}


# --- live: N realtime cameras in one pipeline ------------------------------------------------------
def streams_trial(model: Path, clip: Path, n: int, engine: str, precision: str, threads: int | None,
                  seconds: float, warmup_s: float, max_batch: int | None = None,
                  decode_scale: str | int = "auto") -> dict[str, Any]:
    """N realtime cameras on the clip in one Pipeline for ``seconds`` (after ``warmup_s``).

    A camera's classified fraction is its classified frames over what it should have delivered
    (elapsed time x fps / every-k-th step, or what it did deliver if more), so a capture thread that
    falls behind its pace counts as a loss too. One frame of slack for the window's edges.
    """
    cams = [{"name": f"cam{i}", "source": str(clip), "realtime": True, "loop": True} for i in range(n)]
    p, sink, counter = open_pipeline(bench_config(model, engine, precision, threads, cams, max_batch, decode_scale))
    rates = [(s.camera.source.fps, s.camera.step) for s in p.streams]
    stop = threading.Event()
    worker = threading.Thread(target=p.run, args=(stop,), name="bench-pipeline", daemon=True)
    try:
        worker.start()
        stop.wait(warmup_s)
        before = [(s.figures.classified, s.camera.stats()["frames_passed"]) for s in p.streams]
        sink.latencies_ms(clear=True)
        counter.frame_latency_ms.clear()
        w0, c0 = time.monotonic(), time.process_time()
        stop.wait(seconds)
        wall, cpu = time.monotonic() - w0, time.process_time() - c0
        after = [(s.figures.classified, s.camera.stats()["frames_passed"]) for s in p.streams]
        frame_lat = list(counter.frame_latency_ms)
        sink.wait_for(lambda st: st["pending"] == 0, 1.0)
        event_lat = sink.latencies_ms()
    finally:
        stop.set()
        worker.join(5.0)
        p.close(drain_s=1.0)
    fracs = []
    for (k0, f0), (k1, f1), (fps, step) in zip(before, after, rates, strict=False):
        expected = max(wall * fps / step, f1 - f0)
        fracs.append(min(1.0, (k1 - k0 + 1) / expected) if expected > 0 else 0.0)
    return {"streams": n, "classified_min": round(min(fracs), 4), "ok": min(fracs) >= SUSTAINED,
            "process_cpu_pct": round(100 * cpu / wall, 1), "frame_latency_ms": percentiles(frame_lat),
            "event_latency_ms": percentiles(event_lat)}


def find_streams(trial: Callable[[int], dict[str, Any]], max_n: int) -> tuple[int, list[dict[str, Any]]]:
    """Largest N <= max_n whose trial passes: 1, 2, 4, ... until one fails, then bisect (0 if 1 fails).

    A count that fails is tried once more (a VM's neighbour can steal a few frames' worth of time from
    one trial); it passes if the second trial does. Every trial is returned, in the order run.
    """
    done: dict[int, bool] = {}
    trials: list[dict[str, Any]] = []

    def ok(n: int) -> bool:
        if n not in done:
            for _attempt in (1, 2):
                t = trial(n)
                trials.append(t)
                logger.info("bench: %d stream(s): %.1f %% of frames classified (worst camera), %s", n,
                            100 * t["classified_min"], "sustained" if t["ok"] else "not sustained")
                if t["ok"]:
                    break
            done[n] = t["ok"]
        return done[n]

    lo, hi, n = 0, None, 1
    while n <= max_n:
        if not ok(n):
            hi = n
            break
        lo = n
        if n == max_n:
            break
        n = min(2 * n, max_n)
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo, trials


# --- live: the daemon in a subprocess ------------------------------------------------------------
def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def daemon_run(config: Path, seconds: float, work: Path, timeout_s: float = 180.0) -> dict[str, Any]:
    """``python -m edge run --config CONFIG`` under a fake systemd notify socket.

    ``ready_s``: from spawning the process to READY=1 (sent after the first classified frame). With
    ``seconds`` > 0 it then runs that long: ``cpu_pct`` (process CPU over wall, % of one core) and
    ``rss_mb`` (peak RSS, VmHWM). Stopped with SIGTERM.
    Raises:
        ModelError: the daemon exited or sent no READY=1 within ``timeout_s`` (its stderr is in the message).
    """
    sock_path = work / f"notify-{os.getpid()}-{time.monotonic_ns()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=str(sock_path), PYTHONUNBUFFERED="1")
    err_path = work / "daemon.stderr"
    with open(err_path, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "edge", "-q", "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            ready = None
            while ready is None:
                if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                    tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
                    why = (f"exited {proc.returncode}" if proc.returncode is not None
                           else f"sent no READY=1 in {timeout_s:g} s")
                    raise ModelError(f"bench: the daemon ({config}) {why}: {' / '.join(tail) or 'no output'}")
                sock.settimeout(0.2)
                try:
                    msg = sock.recv(4096)
                except TimeoutError:
                    continue
                if b"READY=1" in msg.split(b"\n"):
                    ready = time.monotonic() - t0
            out: dict[str, Any] = {"ready_s": round(ready, 3)}
            if seconds > 0:
                c0, w0 = _proc_cpu_s(proc.pid), time.monotonic()
                time.sleep(seconds)  # a measured duration, not a wait for something
                c1, w1 = _proc_cpu_s(proc.pid), time.monotonic()
                out["cpu_pct"] = round(100 * (c1 - c0) / (w1 - w0), 1)
                out["rss_mb"] = round(_peak_rss_mb(proc.pid), 1)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()
            sock_path.unlink(missing_ok=True)
    return out


def percentiles(values: list[float]) -> dict[str, Any]:
    """p50 and p99 (None when there are no values) and how many."""
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2), "n": len(a)}


