"""The accuracy guard: FP32 vs INT8 on a held-out set, through the runtime engines, before INT8 becomes the default.

Each clip is decoded once and stepped through both graphs on the same engine, exactly as
``edge-tsm eval`` does (every ``frame_stride``-th frame, states fed back, clip = argmax of the mean
softmax). Reported per engine: top-1 agreement of the two graphs per clip, accuracy and macro-F1 of
each, and the accuracy drop in points. INT8 passes when, on every engine checked, the drop is at
most ``max_drop`` points (and the agreement at least ``min_agreement``, when given).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends import create_backend
from edge.bundle import Bundle
from edge.calibration.progress import bar
from edge.classifier import OnlineClassifier
from edge.data.dataset import load_dataset
from edge.errors import DataError, UsageError
from edge.models.evaluate import metrics_from_confusion, video_frames

logger = logging.getLogger(__name__)


def paired_eval(bundle: Bundle, data: str | Path, engine: str, *, split: str | None = None,
                threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """FP32 and INT8 of ``bundle`` on dataset ``data`` with ``engine``; per-clip agreement and both metrics.

    Raises:
        InputError, DataError: the dataset is missing or malformed, a clip cannot be decoded.
        ModelError, DeviceError: a graph cannot be loaded or run.
    """
    ds = load_dataset(data, split, labels=bundle.labels)
    k = len(bundle.labels)
    backends = {p: create_backend(engine, bundle.graph_path(p), threads=threads, precision_hint="f32")
                for p in ("fp32", "int8")}
    conf = {p: np.zeros((k, k), np.int64) for p in backends}
    disagree: list[str] = []
    try:
        clfs = {p: OnlineClassifier(bundle, be) for p, be in backends.items()}
        totals = {p: np.zeros(k, np.float64) for p in backends}
        for clip in bar(ds.clips, enabled=progress, desc=f"guard {engine}", unit="clip"):
            for p in clfs:
                clfs[p].reset()
                totals[p][:] = 0
            for frame in video_frames(clip.path, bundle.temporal.frame_stride):
                for p, clf in clfs.items():
                    totals[p] += clf.step(frame)
            if clfs["fp32"].frames == 0:
                raise DataError(f"video {clip.path}: no frame decoded")
            pred = {p: int(np.argmax(t)) for p, t in totals.items()}
            for p in pred:
                conf[p][clip.label, pred[p]] += 1
            if pred["fp32"] != pred["int8"]:
                disagree.append(str(clip.path.relative_to(ds.root)))
        notes = {p: be.precision_note for p, be in backends.items()}
    finally:
        for be in backends.values():
            be.close()
    n = len(ds.clips)
    res = {p: metrics_from_confusion(conf[p], bundle.labels) for p in conf}
    out = {"engine": engine, "n": n, "agreement": round(1 - len(disagree) / n, 4),
           "fp32": {"accuracy": round(res["fp32"]["accuracy"], 4), "macro_f1": round(res["fp32"]["macro_f1"], 4)},
           "int8": {"accuracy": round(res["int8"]["accuracy"], 4), "macro_f1": round(res["int8"]["macro_f1"], 4)},
           "drop_points": round(100 * (res["fp32"]["accuracy"] - res["int8"]["accuracy"]), 2),
           "disagreements": disagree[:20], "engine_precision": notes["int8"]}
    logger.info("guard %s on %s: agreement %.4f, accuracy fp32 %.4f int8 %.4f (drop %.2f points), macro-F1 %.4f / "
                "%.4f", engine, data, out["agreement"], out["fp32"]["accuracy"], out["int8"]["accuracy"],
                out["drop_points"], out["fp32"]["macro_f1"], out["int8"]["macro_f1"])
    return out


def decide(results: dict[str, dict[str, Any]], max_drop: float, min_agreement: float | None = None) -> list[str]:
    """Why INT8 must not be the default (empty: it may): one reason per failed engine check."""
    reasons = []
    for engine, r in results.items():
        if r["drop_points"] > max_drop:
            reasons.append(f"{engine}: accuracy drops {r['drop_points']:.2f} points "
                           f"({r['fp32']['accuracy']:.4f} -> {r['int8']['accuracy']:.4f}), limit {max_drop:g}")
        if min_agreement is not None and r["agreement"] < min_agreement:
            reasons.append(f"{engine}: top-1 agreement {r['agreement']:.4f} below {min_agreement:g}")
    return reasons


def guard(bundle: Bundle, data: str | Path, engines: list[str], *, max_drop: float = 1.0,
          min_agreement: float | None = None, split: str | None = None, threads: int | None = None,
          progress: bool = False) -> dict[str, Any]:
    """Run :func:`paired_eval` on each engine and :func:`decide`; the record written into model.yaml.

    Raises:
        UsageError: ``max_drop`` < 0, ``min_agreement`` outside 0..1 or no engine.
        and whatever :func:`paired_eval` raises.
    """
    if max_drop < 0:
        raise UsageError(f"--max-drop {max_drop:g}: expected >= 0 accuracy points")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise UsageError(f"--min-agreement {min_agreement:g}: expected a fraction in 0..1")
    if not engines:
        raise UsageError("accuracy guard: no engine to evaluate on (install onnxruntime or openvino)")
    results = {e: paired_eval(bundle, data, e, split=split, threads=threads, progress=progress) for e in engines}
    reasons = decide(results, max_drop, min_agreement)
    return {"data": str(data), "split": split, "max_drop_points": max_drop, "min_agreement": min_agreement,
            "engines": results, "passed": not reasons, "reasons": reasons}
