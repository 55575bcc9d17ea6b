"""``edge-tsm eval``: accuracy, macro-F1 and confusion of a bundle on a dataset, through the runtime.

The clips go through exactly what the device runs (decode with OpenCV, :class:`edge.preprocess.Preprocessor`,
the engine, :class:`edge.classifier.OnlineClassifier` with its states), one frame at a time; a clip is
predicted as the argmax of the mean softmax over its frames (every ``frame_stride``-th frame), as in
training's validation. No torch.

Metrics follow scikit-learn's conventions (``zero_division=0``): a class's precision, recall or F1 is
0 where undefined, and macro-F1 is the mean F1 over the labels that occur in the true or the
predicted labels (a label with no clips that is never predicted does not count).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.backends import create_backend
from edge.bundle import load_bundle, validate_graph
from edge.classifier import OnlineClassifier
from edge.cpu import isa_text, machine
from edge.data.dataset import load_dataset
from edge.errors import DataError, InputError

logger = logging.getLogger(__name__)


def evaluate(model_ref: str | Path, data_root: str | Path, *, engine: str = "onnxruntime",
             precision: str | None = None, split: str | None = None, device: str = "CPU",
             threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Score bundle ``model_ref`` on the ``ROOT/<label>/*.mp4`` dataset ``data_root``.

    Raises:
        InputError: the bundle or dataset is missing.
        ModelError: the bundle is malformed.
        DataError: the dataset is malformed or a clip cannot be decoded.
        DeviceError/ConfigError: the engine or device cannot be used.
    """
    bundle = load_bundle(model_ref, validate=False)
    prec = precision or bundle.precision
    validate_graph(bundle, prec)
    ds = load_dataset(data_root, split, labels=bundle.labels)
    backend = create_backend(engine, bundle.graph_path(prec), device=device, threads=threads, precision_hint="f32")
    k = len(bundle.labels)
    conf = np.zeros((k, k), np.int64)
    frames = 0
    try:
        clf = OnlineClassifier(bundle, backend)
        total = np.zeros(k, np.float64)
        for clip in _progress(ds.clips, progress, f"eval {engine}"):
            clf.reset()
            total[:] = 0
            for frame in video_frames(clip.path, bundle.temporal.frame_stride):
                total += clf.step(frame)
            if clf.frames == 0:
                raise DataError(f"video {clip.path}: no frame decoded")
            frames += clf.frames
            conf[clip.label, int(np.argmax(total))] += 1
        device_used, note = backend.device, backend.precision_note
    finally:
        backend.close()
    result = metrics_from_confusion(conf, bundle.labels)
    result.update({"engine": engine, "device": device_used, "precision": prec, "precision_note": note,
                   "model": bundle.name, "bundle": str(bundle.root), "data": str(data_root), "split": split,
                   "frames": frames})
    m = machine()  # INT8 figures depend on the CPU family (VNNI or not, ARM): a result names the one it ran on
    result["machine"] = {k: m[k] for k in ("cpu", "arch", "isa")}
    logger.info("eval %s (%s) on %s with %s: accuracy %.4f, macro-F1 %.4f over %d clips", bundle.name, prec,
                data_root, engine, result["accuracy"], result["macro_f1"], result["n"])
    return result


def video_frames(path: Path, stride: int) -> Iterator[np.ndarray]:
    """Every ``stride``-th frame of a video, starting with the first (BGR uint8)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"video {path}: cannot be opened by OpenCV")
    try:
        i = 0
        while True:
            if i % stride == 0:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
            elif not cap.grab():
                return
            i += 1
    finally:
        cap.release()


def _progress(items: list[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    import sys
    return tqdm(items, desc=desc, unit="clip", file=sys.stderr, dynamic_ncols=True)


# --- metrics (numpy only) ---------------------------------------------------------------------------------
def metrics_from_confusion(confusion: Any, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class figures from a confusion matrix (rows true, columns predicted)."""
    conf = np.asarray(confusion, dtype=np.int64)
    k = len(labels)
    if conf.shape != (k, k):
        raise DataError(f"confusion: expected {k} x {k} for {k} labels, got {list(conf.shape)}")
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(1)
    predicted = conf.sum(0)
    n = int(conf.sum())

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(k), where=den > 0)

    prec = ratio(tp, predicted)
    rec = ratio(tp, support)
    f1 = ratio(2 * tp, support + predicted)  # = 2PR / (P + R), 0 where undefined
    present = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                            "support": int(support[i])} for i, lab in enumerate(labels)},
        "confusion": conf.tolist(),
        "labels": list(labels),
        "n": n,
    }


# --- reports --------------------------------------------------------------------------------------------
def abbreviations(labels: list[str]) -> list[str]:
    """Short unique names: initials of multi-word labels (``swipe_left`` -> ``sl``), else the first three
    letters; labels that collide take more letters of their last word (``rcw``, ``rcc``)."""
    def candidates(lab: str) -> list[str]:
        words = [w for w in re.split(r"[_\-\s]+", lab) if w] or [lab]
        if len(words) > 1:
            stem, last = "".join(w[0] for w in words[:-1]), words[-1]
            return [stem + last[:n] for n in range(1, min(len(last), 6) + 1)]
        return [lab[:n] for n in range(3, max(len(lab), 3) + 1)][:4]

    cands = [candidates(lab) for lab in labels]
    level = [0] * len(labels)
    for _ in range(8):
        current = [c[min(lv, len(c) - 1)] for c, lv in zip(cands, level, strict=False)]
        dup = [i for i, a in enumerate(current) if current.count(a) > 1 and level[i] < len(cands[i]) - 1]
        if not dup:
            break
        for i in dup:
            level[i] += 1
    current = [c[min(lv, len(c) - 1)] for c, lv in zip(cands, level, strict=False)]
    return [f"{a}{i}" if current.count(a) > 1 else a for i, a in enumerate(current)]


def format_report(result: dict[str, Any]) -> str:
    """Plain-text report: headline figures, a per-class table and the confusion matrix."""
    labels, conf = result["labels"], result["confusion"]
    abbr = abbreviations(labels)
    lw = max([len("label")] + [len(lab) for lab in labels])
    aw = max([len("abbr")] + [len(a) for a in abbr])
    head = (f"model {result.get('model', '?')} ({result.get('precision', '?')}) on {result.get('engine', '?')}"
            f"/{result.get('device', '?')} ({result.get('precision_note', '?')}), {result['n']} clips")
    lines = [head] + ([f"cpu       {isa_text(result['machine'])}"] if result.get("machine") else [])
    lines += [f"accuracy  {result['accuracy']:.4f}", f"macro-F1  {result['macro_f1']:.4f}", "",
              f"{'label':<{lw}}  {'abbr':<{aw}}  precision  recall      f1  support"]
    for lab, a in zip(labels, abbr, strict=False):
        pc = result["per_class"][lab]
        lines.append(f"{lab:<{lw}}  {a:<{aw}}  {pc['precision']:9.4f}  {pc['recall']:6.4f}  {pc['f1']:6.4f}  "
                     f"{pc['support']:7d}")
    cw = max([len(a) for a in abbr] + [len(str(v)) for row in conf for v in row]) + 1
    lines += ["", "confusion (rows: true, columns: predicted)",
              " " * (aw + 1) + "".join(f"{a:>{cw}}" for a in abbr)]
    lines += [f"{a:<{aw}} " + "".join(f"{v:>{cw}}" for v in row) for a, row in zip(abbr, conf, strict=False)]
    return "\n".join(lines)


def plot_confusion(result: dict[str, Any], path: str | Path) -> Path:
    """Draw the confusion matrix as a PNG (OpenCV only): cells shaded by row-normalised value, counts in
    the cells, label names on both axes (column names rotated).

    Raises:
        InputError: the file cannot be written.
    """
    labels = result["labels"]
    conf = np.asarray(result["confusion"], dtype=np.int64)
    k = len(labels)
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
    cell = int(np.clip(720 // max(k, 1), 30, 72))
    lscale = 0.45
    name_w = max(cv2.getTextSize(lab, font, lscale, thick)[0][0] for lab in labels) + 10
    name_h = cv2.getTextSize("Ag", font, lscale, thick)[0][1] + 8
    left, top = name_w + 30, name_w + 60
    width = max(left + k * cell + 20, 420)
    img = np.full((top + k * cell + 20, width, 3), 255, np.uint8)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros(conf.shape), where=rows > 0)
    dark = np.array([110, 45, 10], np.float64)  # BGR: deep blue
    cscale = cell / 90
    for i in range(k):
        for j in range(k):
            v = float(norm[i, j])
            colour = tuple(int(c) for c in 255 * (1 - v) + dark * v)
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour, -1)
            text = str(int(conf[i, j]))
            (tw, th), _ = cv2.getTextSize(text, font, cscale, thick)
            cv2.putText(img, text, (x0 + (cell - tw) // 2, y0 + (cell + th) // 2), font, cscale,
                        (255, 255, 255) if v > 0.5 else (0, 0, 0), thick, cv2.LINE_AA)
    cv2.rectangle(img, (left - 1, top - 1), (left + k * cell, top + k * cell), (90, 90, 90), 1)
    for i, lab in enumerate(labels):  # row names, right-aligned
        (tw, th), _ = cv2.getTextSize(lab, font, lscale, thick)
        cv2.putText(img, lab, (left - 6 - tw, top + i * cell + (cell + th) // 2), font, lscale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    for j, lab in enumerate(labels):  # column names: drawn flat, rotated to read bottom-up
        (tw, th), base = cv2.getTextSize(lab, font, lscale, thick)
        flat = np.full((name_h, tw + 4, 3), 255, np.uint8)
        cv2.putText(flat, lab, (2, name_h - base - 2), font, lscale, (0, 0, 0), thick, cv2.LINE_AA)
        rot = cv2.rotate(flat, cv2.ROTATE_90_COUNTERCLOCKWISE)
        x0 = left + j * cell + (cell - rot.shape[1]) // 2
        y0 = top - 6 - rot.shape[0]
        region = img[y0:y0 + rot.shape[0], x0:x0 + rot.shape[1]]
        np.minimum(region, rot[:region.shape[0], :region.shape[1]], out=region)
    title = f"{result.get('model', '')} {result.get('engine', '')}  acc {result['accuracy']:.3f}  " \
            f"macro-F1 {result['macro_f1']:.3f}  n={result['n']}"
    cv2.putText(img, title.strip(), (8, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "rows: true, columns: predicted", (8, 40), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    path = Path(path)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise InputError(f"plot {path}: OpenCV could not encode the PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png.tobytes())
    except OSError as e:
        raise InputError(f"plot {path}: cannot write ({e})") from None
    return path
