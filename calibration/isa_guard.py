"""The INT8 guard on another x86 CPU family than the one at hand, by emulating its CPUID.

ONNX Runtime's INT8 kernels (MLAS) are chosen at run time from CPUID: AVX-512 VNNI machines take
``vpdpbusd``, AVX2-only machines ``vpmaddubsw``, whose u8 x s8 pair sums saturate at int16 (the reason
for ``quantize --reduce-range``). A guard measured on one family says little about the other. This
runs the guard's clips through a graph under ``qemu-x86_64 -cpu Haswell`` (Debian's ``qemu-user``), so
the engine takes the AVX2 path on a VNNI machine:

1. ``python -m edge.calibration.isa_guard dump --model B --data D --out inputs.npz``: decode and
   preprocess every clip natively, once (decoding under emulation would take hours);
2. ``qemu-x86_64 -cpu Haswell python -m edge.calibration.isa_guard run --model B --precision int8
   --inputs inputs.npz``: the engine steps only (about 20 minutes for 540 clips x 8 frames of the 112x112
   default model on 2 cores), printing accuracy and the per-clip predictions as JSON;
3. the same ``run`` natively for FP32; ``--reference fp32.json`` makes ``run`` print top-1 agreement.

Clip predictions follow :func:`edge.models.evaluate.evaluate` (argmax of the summed softmax over the
clip's frames), so native runs reproduce ``edge-tsm eval``. Checked: the emulated Haswell gives 0.9759 for
the default INT8 graph, the figure reported from a real AVX2-only AMD EPYC (issue 16).

OpenVINO needs no emulation: its convolutions are oneDNN's, which honours ``ONEDNN_MAX_CPU_ISA``, so step 2
is ``ONEDNN_MAX_CPU_ISA=AVX2 python -m edge.calibration.isa_guard run --engine openvino ...`` natively (about
15 s for the same clips; OpenVINO's own JIT nodes are not capped). Checked: the previous 8-bit graph gives
0.9759 under the cap and 0.9815 without it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def dump(model: str, data: str, out: str) -> dict:
    """Every clip's preprocessed frames (as the engine gets them), lengths and labels, in one npz."""
    from edge.backends import create_backend
    from edge.bundle import load_bundle
    from edge.classifier import OnlineClassifier
    from edge.data.dataset import load_dataset
    from edge.models.evaluate import video_frames
    b = load_bundle(model)
    ds = load_dataset(data, None, labels=b.labels)
    clf = OnlineClassifier(b, create_backend("onnxruntime", b.graph_path("fp32"), threads=1))
    xs, lens, labels = [], [], []
    try:
        for clip in ds.clips:
            n = 0
            for frame in video_frames(clip.path, b.temporal.frame_stride):
                xs.append(clf.preprocess(frame).copy())
                n += 1
            lens.append(n)
            labels.append(clip.label)
    finally:
        clf.backend.close()
    np.savez(out, x=np.stack(xs), lens=np.array(lens), labels=np.array(labels))
    return {"clips": len(lens), "frames": len(xs), "out": out}


def run(model: str, precision: str, inputs: str, engine: str = "onnxruntime",
        reference: str | None = None) -> dict:
    """Step every clip of ``inputs`` through ``model``'s ``precision`` graph; accuracy and predictions."""
    from edge.backends import create_backend
    from edge.bundle import load_bundle
    from edge.classifier import OnlineClassifier
    b = load_bundle(model, validate=False)
    d = dict(np.load(inputs))  # an npz member is re-read from the zip at every access: load each once
    clf = OnlineClassifier(b, create_backend(engine, b.graph_path(precision), precision_hint="f32"))
    preds, i, t0 = [], 0, time.time()
    try:
        for n in d["lens"]:
            clf.reset()
            total = np.zeros(len(b.labels))
            for k in range(int(n)):
                total += clf.step_input(d["x"][i + k])
            i += int(n)
            preds.append(int(np.argmax(total)))
    finally:
        clf.backend.close()
    p = np.array(preds)
    out = {"model": model, "precision": precision, "engine": engine, "n": len(preds),
           "accuracy": round(float((p == d["labels"]).mean()), 4), "seconds": round(time.time() - t0, 1)}
    if reference:
        ref = np.array(json.loads(Path(reference).read_text())["preds"])
        out["agreement"] = round(float((p == ref).mean()), 4)
    out["preds"] = preds
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.calibration.isa_guard", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    dp = sub.add_parser("dump", help="decode and preprocess the clips natively, once")
    dp.add_argument("--model", default="default")
    dp.add_argument("--data", required=True, help="dataset ROOT/<label>/*.mp4 (the guard's held-out set)")
    dp.add_argument("--out", required=True, help="npz to write")
    rp = sub.add_parser("run", help="the engine steps (run this one under qemu-x86_64 -cpu MODEL)")
    rp.add_argument("--model", default="default")
    rp.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    rp.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "openvino"])
    rp.add_argument("--inputs", required=True, help="the npz of dump")
    rp.add_argument("--reference", help="a run's JSON (FP32, native) to compute top-1 agreement against")
    a = ap.parse_args(argv)
    res = dump(a.model, a.data, a.out) if a.step == "dump" else run(a.model, a.precision, a.inputs, a.engine,
                                                                     a.reference)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
