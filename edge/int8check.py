"""The INT8 self-check on the device: FP32 and INT8 of the bundle side by side on THIS CPU (``edge-tsm check``).

The accuracy guard (``edge-tsm quantize``) ran on one machine; INT8 kernels differ by CPU family (AVX-512
VNNI, AVX2 only, ARM), so a bundle can hold its guard there and not here. This runs a fixed sample
through both graphs on the configured engine, device and threads, and says in one warning line when
INT8 departs from FP32 here more than the guard allows, naming the CPU and what to do.

The sample: clips rendered in memory by :mod:`edge.data.synth` (the generator the bundle was trained on,
``provenance.generator``; 4 when it says none) at seed 1, ``PER_CLASS`` of each of its nine motions, 160x120
and 24 frames as ``dataset synth --generator G --seed 1`` makes them (the recipe's held-out set of that
generator starts with exactly these, before its mp4 encoding), stepped
as ``edge-tsm eval`` steps a clip (every ``frame_stride``-th frame, states fed back, a clip = argmax of
its summed softmax). No file is needed on the device and the same frames go in everywhere. A bundle
with other labels gets the same frames: they are just pictures with motion, and what is checked is
whether the two graphs agree on them, not whether they are right.

What is compared (both from the same frames, so only the kernels differ):

- the mean total-variation distance between the two graphs' per-frame probabilities against what the
  same sample gave on the guard's machine (``quantization.guard.selfcheck``, written by ``quantize``):
  at most ``TV_RATIO`` times that. This is what sees saturating kernels: top-1 agreement on a few dozen
  clips does not (see ``TV_RATIO``'s comment);
- clip top-1 agreement against the guard's ``min_agreement`` (0.99 when it set none), and for a bundle
  with the generator's labels the accuracy drop against ``max_drop_points`` (0.5);
- frame top-1 agreement against ``FRAME_AGREEMENT``: a graph that is plainly wrong, with or without a
  recorded reference.

A few dozen clips cannot resolve half a point of accuracy: ``quantize --eval`` on a held-out set of this
CPU's own recordings is the full answer.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edge.backends import create_backend
from edge.bundle import Bundle
from edge.classifier import OnlineClassifier
from edge.cpu import family, isa_text, machine
from edge.preprocess import Preprocessor

logger = logging.getLogger(__name__)

SEED = 1                # edge-tsm dataset synth --seed 1: the embedded model's held-out set
PER_CLASS = 4           # 36 clips, 288 frame steps per graph for a stride-3 model: ~3 s with ONNX Runtime here
CLIP_SIZE = (160, 120)  # as the recipe's datasets
CLIP_FRAMES = 24
# Frame top-1 agreement at or above which the kernels are taken to agree. Measured (seed 1, 4 per class,
# the embedded model): 0.990 (ONNX Runtime) and 0.986 (OpenVINO) on AVX-512 VNNI; 0.858 for an INT8
# graph of another model with the same inputs.
FRAME_AGREEMENT = 0.95
# With the guard machine's figures in model.yaml: the mean total-variation distance between the FP32 and
# INT8 probabilities of a frame may be at most TV_RATIO times (and TV_SLACK above) what it was there.
# Measured (seed 1, 4 per class, the embedded model, ONNX Runtime): the 8-bit-weight graph that lost 0.74
# points on AVX2-only x86 gives 0.0104 on AVX-512 VNNI and 0.0184 under an emulated Haswell (frame top-1
# agreement 0.979 / 0.976, clips 1.000 / 1.000: top-1 alone does not see it); the shipped 7-bit graph 0.0098
# on both (OpenVINO 0.0095 on VNNI), so a limit of 1.5x passes it on either family and catches the other.
TV_RATIO = 1.5
TV_SLACK = 0.002
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_MAX_DROP = 0.5


def sample_clips(per_class: int = PER_CLASS, seed: int = SEED, generator: int = 4) -> list[tuple[int, np.ndarray]]:
    """``(class index, frames)`` of the sample, frames BGR uint8 (generator order: class, then clip), by the
    synthetic ``generator`` (a bundle's: :attr:`Bundle.synth_generator`)."""
    from edge.data.synth import CLASSES, render_clip
    return [(k, render_clip(label, np.random.default_rng([seed, k, i]), CLIP_SIZE, CLIP_FRAMES, generator=generator))
            for i in range(per_class) for k, label in enumerate(CLASSES)]


def paired_run(bundle: Bundle, engine: str, *, device: str = "CPU", threads: int | None = None,
               precision_hint: str = "f32", allow_fallback: bool = False, per_class: int = PER_CLASS,
               seed: int = SEED, int8_path: Any = None) -> dict[str, Any]:
    """The sample through the bundle's FP32 and INT8 graphs on ``engine``; agreement and accuracy figures.

    ``int8_path`` replaces the bundle's INT8 graph (a graph to try before it goes into the bundle).
    Raises:
        ModelError: a graph is missing or does not match model.yaml. DeviceError: the engine cannot run it.
    """
    from edge.data.synth import CLASSES
    t0 = time.perf_counter()
    paths = {"fp32": bundle.graph_path("fp32"), "int8": int8_path or bundle.graph_path("int8")}
    backends: dict[str, Any] = {}
    try:
        for p, path in paths.items():
            backends[p] = create_backend(engine, path, device=device, threads=threads, precision_hint=precision_hint,
                                         allow_fallback=allow_fallback)
        clfs = {p: OnlineClassifier(bundle, be) for p, be in backends.items()}
        pre = Preprocessor(bundle.input)
        stride = max(1, bundle.temporal.frame_stride)
        synth_labels = list(bundle.labels) == list(CLASSES)
        frames = frames_agree = clips_agree = 0
        tv = 0.0  # summed total-variation distance between the two graphs' per-frame probabilities
        right = {"fp32": 0, "int8": 0}
        clips = sample_clips(per_class, seed, bundle.synth_generator)
        for k, clip in clips:
            totals = {p: np.zeros(len(bundle.labels), np.float64) for p in clfs}
            for clf in clfs.values():
                clf.reset()
            for img in clip[::stride]:
                x = pre(img)
                probs = {p: clf.step_input(x) for p, clf in clfs.items()}
                for p, pr in probs.items():
                    totals[p] += pr
                frames += 1
                frames_agree += int(np.argmax(probs["fp32"]) == np.argmax(probs["int8"]))
                tv += 0.5 * float(np.abs(probs["fp32"] - probs["int8"]).sum())
            pred = {p: int(np.argmax(t)) for p, t in totals.items()}
            clips_agree += int(pred["fp32"] == pred["int8"])
            for p in right:
                right[p] += int(pred[p] == k)
        device_used = backends["int8"].device
    finally:
        for be in backends.values():
            be.close()
    n = len(clips)
    m = machine()
    out: dict[str, Any] = {
        "engine": engine, "device": device_used, "clips": n, "frames": frames, "seed": seed,
        "frame_agreement": round(frames_agree / frames, 4), "clip_agreement": round(clips_agree / n, 4),
        "mean_tv": round(tv / frames, 5),
        "fp32_accuracy": None, "int8_accuracy": None, "drop_points": None,
        "cpu": m["cpu"], "arch": m["arch"], "isa": m["isa"], "family": family(m),
        "seconds": round(time.perf_counter() - t0, 2)}
    if synth_labels:
        acc = {p: right[p] / n for p in right}
        out.update(fp32_accuracy=round(acc["fp32"], 4), int8_accuracy=round(acc["int8"], 4),
                   drop_points=round(100 * (acc["fp32"] - acc["int8"]), 2))
    return out


def reference(bundle: Bundle, engine: str) -> dict[str, Any] | None:
    """What this sample gave on the machine where the guard passed (``quantization.guard.selfcheck`` in
    model.yaml, written by ``quantize``), for ``engine``; None when the bundle has none."""
    ref = ((bundle.quantization or {}).get("guard") or {}).get("selfcheck") or {}
    figures = (ref.get("engines") or {}).get(engine)
    if not figures or "mean_tv" not in figures:
        return None
    return {**figures, "per_class": int(ref.get("per_class", PER_CLASS)), "seed": int(ref.get("seed", SEED))}


def limits(bundle: Bundle, engine: str | None = None) -> dict[str, Any]:
    """The guard's limits as the bundle records them (quantization.guard), else the defaults; with the
    guard machine's own figures for ``engine`` when it recorded them, the most this CPU's mean distance may be."""
    guard = (bundle.quantization or {}).get("guard") or {}
    out: dict[str, Any] = {
        "min_agreement": float(guard.get("min_agreement") or DEFAULT_MIN_AGREEMENT),
        "max_drop_points": float(guard["max_drop_points"] if guard.get("max_drop_points") is not None
                                 else DEFAULT_MAX_DROP),
        "frame_agreement": FRAME_AGREEMENT, "max_tv": None}
    ref = reference(bundle, engine) if engine else None
    if ref is not None:
        out["max_tv"] = round(max(TV_RATIO * float(ref["mean_tv"]), float(ref["mean_tv"]) + TV_SLACK), 5)
        out["reference_tv"] = float(ref["mean_tv"])
    return out


def problems(res: dict[str, Any], lim: dict[str, Any]) -> list[str]:
    """What departs from the guard on this CPU (empty: INT8 holds here as far as the sample can tell)."""
    out = []
    if lim.get("max_tv") is not None and res["mean_tv"] > lim["max_tv"]:
        out.append(f"mean FP32-INT8 probability distance {res['mean_tv']:.4f} > {lim['max_tv']:.4f} (the guard's "
                   f"machine: {lim['reference_tv']:.4f})")
    if res["frame_agreement"] < lim["frame_agreement"]:
        out.append(f"frame top-1 agreement {res['frame_agreement']:.3f} < {lim['frame_agreement']:g}")
    if res["clip_agreement"] < lim["min_agreement"]:
        out.append(f"clip top-1 agreement {res['clip_agreement']:.3f} < {lim['min_agreement']:g}")
    if res["drop_points"] is not None and res["drop_points"] > lim["max_drop_points"]:
        out.append(f"accuracy {res['fp32_accuracy']:.3f} -> {res['int8_accuracy']:.3f} (-{res['drop_points']:.1f} "
                   f"points, limit {lim['max_drop_points']:g})")
    return out


def self_check(bundle: Bundle, engine: str, *, device: str = "CPU", threads: int | None = None,
               precision_hint: str = "f32", allow_fallback: bool = False, per_class: int | None = None,
               int8_path: Any = None) -> dict[str, Any]:
    """:func:`paired_run` and the verdict: ``passed``, ``problems`` and the one ``line`` to show; a failure is
    logged as one WARNING naming the CPU, its ISA and the way out.

    Raises:
        whatever :func:`paired_run` raises.
    """
    ref = reference(bundle, engine)
    seed = SEED
    if per_class is None:  # the sample the guard's machine measured, when it recorded one
        per_class, seed = (ref["per_class"], ref["seed"]) if ref else (PER_CLASS, SEED)
    res = paired_run(bundle, engine, device=device, threads=threads, precision_hint=precision_hint,
                     allow_fallback=allow_fallback, per_class=per_class, seed=seed, int8_path=int8_path)
    same = ref is not None and (per_class, seed) == (ref["per_class"], ref["seed"])
    lim = limits(bundle, engine if same else None)
    found = problems(res, lim)
    res.update(passed=not found, problems=found, limits=lim)
    where = f"{engine} {res['device']}, {isa_text(res)}"
    sample = f"{res['clips']} rendered clips, {res['frames']} frames"
    if found:
        res["line"] = (f"INT8 self-check: model {bundle.name}'s INT8 graph departs from FP32 on this CPU ({where}): "
                       f"{', '.join(found)} on {sample} (its guard ran on {_guard_cpu(bundle)}); run FP32 here "
                       f"(engine: {{precision: fp32}}) or re-quantize with --reduce-range")
        logger.warning("%s", res["line"])
    else:
        res["line"] = (f"INT8 self-check passed ({where}): top-1 agreement {res['clip_agreement']:.3f} of clips, "
                       f"{res['frame_agreement']:.3f} of frames on {sample} ({res['seconds']:.1f} s)")
        logger.info("%s", res["line"])
    return res


def _guard_cpu(bundle: Bundle) -> str:
    guard = (bundle.quantization or {}).get("guard") or {}
    if "cpu" not in guard:
        return "a CPU it does not name"
    return isa_text({"cpu": guard["cpu"], "arch": guard.get("arch", "?"), "isa": guard.get("isa") or []})


def for_config(cfg: Any, bundle: Bundle | None) -> dict[str, Any] | None:
    """``check``'s self-check: on the config's engine, device and threads when it runs the INT8 graph; None when
    it runs FP32 (nothing to compare).

    Raises:
        whatever :func:`paired_run` raises.
    """
    from edge.pipeline import engine_threads
    e = cfg.engine
    if bundle is None or (e.precision or bundle.precision) != "int8":
        return None
    return self_check(bundle, e.type, device=e.device, threads=engine_threads(e), precision_hint=e.precision_hint,
                      allow_fallback=e.allow_fallback)


def reference_block(bundle: Bundle, engines: list[str], *, threads: int | None = None,
                    per_class: int = PER_CLASS) -> dict[str, Any]:
    """What ``quantize`` records beside its guard (``quantization.guard.selfcheck``): this sample's figures on
    each engine on the guard's machine, the yardstick :func:`self_check` holds a device's figures to.

    Raises:
        whatever :func:`paired_run` raises.
    """
    out: dict[str, Any] = {"seed": SEED, "per_class": per_class, "generator": bundle.synth_generator, "engines": {}}
    for engine in engines:
        r = paired_run(bundle, engine, threads=threads, per_class=per_class)
        out["engines"][engine] = {k: r[k] for k in ("clips", "frames", "frame_agreement", "clip_agreement", "mean_tv")}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.int8check --model B [--engine E] [--int8 FILE]``: the self-check's figures as JSON (run it
    under ``qemu-x86_64 -cpu Haswell`` to see another x86 family, as :mod:`edge.calibration.isa_guard` does)."""
    import argparse
    import json

    from edge.bundle import load_bundle
    ap = argparse.ArgumentParser(prog="python -m edge.int8check",
                                 description="the INT8 self-check's figures on this CPU, as JSON")
    ap.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    ap.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "openvino"])
    ap.add_argument("--threads", type=int, help="engine threads (default: the engine's)")
    ap.add_argument("--int8", help="an INT8 graph to check instead of the bundle's")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    res = self_check(load_bundle(a.model), a.engine, threads=a.threads, int8_path=a.int8)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
