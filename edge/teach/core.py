"""``teach``: a new bundle from a handful of labelled clips, on the runtime install (no torch).

1. the base bundle's graph is cut before its classifier (:mod:`edge.teach.graph`);
2. every clip's features go through the runtime engine once (:mod:`edge.teach.features`);
3. a head is trained on them with numpy and cross-validated (:mod:`edge.teach.head`, :mod:`.report`);
4. the head is grafted onto the FP32 graph and, when the base has one, onto its INT8 graph (the
   backbone's calibration stays valid; the head runs in float), whose agreement with FP32 is checked;
5. model.yaml, CARD.md and the graphs are written to a hidden folder beside ``out`` and renamed to
   ``out`` at the end, so a failure or a cancel leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from edge.backends import available_engines, create_backend
from edge.bundle import Bundle, load_bundle
from edge.cache import sha256
from edge.errors import EX_DATAERR, EX_UNAVAILABLE, EX_USAGE, EdgeError, ModelError
from edge.paths import show_path
from edge.teach import features as feat
from edge.teach.blas import blas_threads
from edge.teach.graph import HISTORY_IN, HISTORY_OUT, features_model, find_cut, graft
from edge.teach.head import HeadConfig, fit, forward
from edge.teach.report import card, cross_validate, needs_more

logger = logging.getLogger(__name__)

EX_CANTCREAT = 73   # sysexits: the output folder exists or cannot be made
EX_CANCELLED = 130  # the caller's cancel event (as an interrupt)
MIN_INT8_AGREEMENT = 0.98
CURVE_KS = (1, 2, 5, 10, 20)
Progress = Callable[[str, int, int], None]


class TeachError(EdgeError):
    """Teach failed: ``code`` is the sysexits exit code, ``str(error)`` one line saying why (an EdgeError,
    so the command line prints it as one line and exits with ``code``)."""

    def __init__(self, message: str, code: int = EX_DATAERR) -> None:
        super().__init__(" ".join(str(message).split()))
        self.code = code

    @property
    def exit_code(self) -> int:
        return self.code


@dataclass
class TeachReport:
    out: Path
    labels: list[str]
    clips_per_class: dict[str, int]
    accuracy: float                          # cross-validated (nan when a class has fewer than 2 clips)
    per_class_recall: dict[str, float]
    confusion: list[list[int]]               # rows true, columns predicted, in ``labels`` order
    misclassified: list[dict]                # {"path", "label", "predicted"}
    curve: list[dict]                        # {"k", "accuracy"}
    seconds: float
    skipped: list[dict]                      # {"path", "why"}
    engine: str = ""
    folds: int = 0
    needs_more: str | None = None
    int8_agreement: float | None = None
    precision: str = "fp32"
    made: dict[str, int] = field(default_factory=dict)   # negatives teach made itself, per label
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TeachOptions:
    head: HeadConfig = HeadConfig()
    phases: bool = True          # also the other every-k-th samplings of each clip
    augment: int = 1             # crop/jitter/flip passes per clip
    stills: bool = True          # still negatives made from each clip
    negatives: int = 3           # generated clips of each other motion as background (0: none)
    cross_validate: bool = True
    threads: int | None = None   # engine threads (None: the engine's default)
    seed: int = 0


def _engine(engine: str | None) -> str:
    have = available_engines()
    if engine is None:
        if not have:
            raise TeachError("teach needs an inference engine: pip install 'edge-tsm[onnxruntime]' (or [openvino])",
                             EX_UNAVAILABLE)
        return have[0]
    return engine


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out``, renamed to ``out`` by the caller; removed on any failure."""
    tmp = out.parent / f".{out.name}.teach-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as e:
        raise TeachError(f"--out {show_path(out)}: cannot create a folder beside it ({e.strerror or e})",
                         EX_CANTCREAT) from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def teach(base: str | Path = "default", data: str | Path = ".", out: str | Path = "taught", *,
          engine: str | None = None, progress: Progress | None = None, cancel: threading.Event | None = None,
          options: TeachOptions | None = None, name: str | None = None) -> TeachReport:
    """Teach ``base``'s network the classes of ``data`` (``ROOT/<label>/*``); write the bundle ``out``.

    ``progress(stage, done, total)`` is called as work advances (stages: read, features, cross-validation,
    head, int8, write); ``cancel`` (a threading.Event) stops it at the next clip or fold, leaving nothing.
    Raises:
        TeachError: one line and a sysexits code (65 bad data or base, 66 missing input, 69 no engine,
            73 the output exists, 130 cancelled).
    """
    try:
        return _teach(Path(str(base)) if not isinstance(base, str) else base, Path(data), Path(out), engine,
                      progress, cancel, options or TeachOptions(), name)
    except feat.Cancelled:
        raise TeachError("teach: cancelled; nothing written", EX_CANCELLED) from None
    except EdgeError as e:
        raise TeachError(str(e), e.exit_code) from None


def _load_base(base: str | Path) -> tuple[Bundle, onnx.ModelProto, onnx.ModelProto | None]:
    bundle = load_bundle(base)
    where = f"base {bundle.name} ({show_path(bundle.yaml_path)})"
    if bundle.kind != "online":
        raise ModelError(f"{where}: is a {bundle.kind} model (a window of frames per step); teach needs an online "
                         "bundle (one frame per step with state tensors)")
    if "fp32" not in bundle.files:
        raise ModelError(f"{where}: has no FP32 graph (files.fp32); teach grafts its head onto the FP32 network")
    fp32 = onnx.load(str(bundle.graph_path("fp32")))
    int8 = onnx.load(str(bundle.graph_path("int8"))) if "int8" in bundle.files else None
    names = {s.input for s in bundle.states} | {s.output for s in bundle.states}
    if names & {HISTORY_IN, HISTORY_OUT} or any(n.name.startswith("teach/") for n in fp32.graph.node):
        raise ModelError(f"{where}: is a taught bundle (its graph holds a taught head); teach from its base "
                         f"({(bundle.provenance.get('taught') or {}).get('base', 'the bundle it was taught from')}) "
                         "with all the classes' clips instead")
    return bundle, fp32, int8


def _check_options(opts: TeachOptions) -> None:
    """Bounds of the options a user sets (--frames, --augment, --threads): one line, exit 64."""
    for key, value, low, high in (("--frames", opts.head.frames, 1, 64), ("--augment", opts.augment, 0, 32),
                                  ("--threads", opts.threads, 1, 256)):
        if value is not None and not low <= value <= high:
            raise TeachError(f"teach: {key} {value}: must be {low} to {high}", EX_USAGE)


def _teach(base: str | Path, data: Path, out: Path, engine: str | None, progress: Progress | None,
           cancel: threading.Event | None, opts: TeachOptions, name: str | None) -> TeachReport:
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    _check_options(opts)
    if out.exists() or out.is_symlink():
        raise TeachError(f"--out {show_path(out)}: already exists (teach writes a new bundle folder; remove it or "
                         "give another name)", EX_CANTCREAT)
    if not out.parent.is_dir():
        raise TeachError(f"--out {show_path(out)}: its folder {show_path(out.parent)} does not exist", EX_CANTCREAT)
    bundle, fp32, int8 = _load_base(base)
    where = f"base {bundle.name}"
    cut = find_cut(fp32, bundle.output_name, f"{where} {bundle.files['fp32']}")
    cut8 = find_cut(int8, bundle.output_name, f"{where} {bundle.files['int8']}") if int8 is not None else None
    engine = _engine(engine)
    clips = feat.read_clips(data, progress, cancel)
    times["read"] = time.perf_counter() - t0
    with _staging(out) as tmp:
        fpath = tmp / ".features.onnx"
        onnx.save(features_model(fp32, bundle.output_name, cut), str(fpath))
        backend = create_backend(engine, fpath, threads=opts.threads, precision_hint="f32")
        try:
            ex = feat.Extractor(bundle, backend)
            jobs = feat.plan_views(clips, bundle, opts.phases, opts.augment, opts.stills)
            views = feat.extract(clips, bundle, ex, jobs, opts.seed, progress, cancel)
            negatives, dropped, skip = [], 0, set()
            if opts.negatives:
                skip = feat.look_alikes(cut.base_logits, bundle.labels, views) if cut.weight is not None else set()
                negatives, dropped = feat.motion_negatives(clips, bundle, ex, views, opts.negatives, opts.seed, cancel,
                                                           skip)
            views += negatives
            if dropped or skip:
                logger.info("teach: generated negatives left out: %s%s%d clip(s) like a taught class",
                            ", ".join(sorted(skip & set(feat.NEGATIVE_MOTIONS))) or "no motion",
                            " (the base takes taught clips for them); " if skip else "; ", dropped)
        finally:
            backend.close()
            fpath.unlink()
        times["features"] = time.perf_counter() - t0 - times["read"]
        t1 = time.perf_counter()
        labels = clips.labels
        with blas_threads(1):  # small matrices: one BLAS thread is faster (edge.teach.blas)
            cv = cross_validate(clips, views, opts.head, ks=CURVE_KS, seed=opts.seed, progress=progress,
                                cancel=cancel) if opts.cross_validate else {"folds": 0}
            times["cross_validation"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            head = fit([v.features for v in views], [labels.index(v.label) for v in views], len(labels), opts.head)
        times["head"] = time.perf_counter() - t1
        if progress is not None:
            progress("head", 1, 1)
        onnx.save(graft(fp32, bundle.output_name, cut, head), str(tmp / "model.onnx"))
        files = {"fp32": "model.onnx"}
        agreement = None
        t1 = time.perf_counter()
        if int8 is not None and cut8 is not None:
            onnx.save(graft(int8, bundle.output_name, cut8, head), str(tmp / "model.int8.onnx"))
            files["int8"] = "model.int8.onnx"
            agreement = _int8_agreement(tmp / "model.int8.onnx", bundle, head, clips, views, engine, opts, cancel)
            if progress is not None:
                progress("int8", 1, 1)
        times["int8"] = time.perf_counter() - t1
        precision = "int8" if "int8" in files and bundle.precision == "int8" and agreement is not None \
            and agreement["agreement"] >= MIN_INT8_AGREEMENT else "fp32"
        if "int8" in files and precision == "fp32" and bundle.precision == "int8":
            logger.warning("teach: INT8 agrees with FP32 on %.4f of frames (< %.2f): the bundle's precision stays "
                           "fp32 (model.int8.onnx is kept)", agreement["agreement"], MIN_INT8_AGREEMENT)
        made = {}
        for v in views:
            if v.kind in ("still", "motion"):
                made[v.label] = made.get(v.label, 0) + 1
        counts = clips.counts()
        seconds = time.perf_counter() - t0
        meta = _yaml(bundle, name or out.name, labels, head, files, precision, counts, made, cv, opts, seconds,
                     agreement, clips, fp32, views)
        (tmp / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        (tmp / "CARD.md").write_text(card(meta["name"], bundle.name, labels, counts, cv, made, seconds,
                                          opts.head.settings(), agreement, clips.skipped), encoding="utf-8")
        load_bundle(tmp)  # the runtime's own check: yaml against graph
        for p in ("fp32", "int8"):
            if p in files and p != precision:
                from edge.bundle import validate_graph
                validate_graph(load_bundle(tmp, validate=False), p)
        if progress is not None:
            progress("write", 1, 1)
        try:
            tmp.rename(out)
        except OSError as e:
            raise TeachError(f"--out {show_path(out)}: cannot rename the finished bundle into place "
                             f"({e.strerror or e})", EX_CANTCREAT) from None
    seconds = time.perf_counter() - t0
    times["total"] = seconds
    logger.info("teach: %s in %.1f s (%s)", out, seconds, ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return TeachReport(out=out, labels=labels, clips_per_class=counts,
                       accuracy=float(cv.get("accuracy", float("nan"))),
                       per_class_recall=cv.get("per_class_recall", {}),
                       confusion=cv.get("confusion", []), misclassified=cv.get("misclassified", []),
                       curve=[{"k": p["k"], "accuracy": p["accuracy"]} for p in cv.get("curve", [])],
                       seconds=seconds, skipped=clips.skipped, engine=engine, folds=cv.get("folds", 0),
                       needs_more=needs_more(cv, counts) if cv.get("folds") else None,
                       int8_agreement=None if agreement is None else agreement["agreement"], precision=precision,
                       made=made, timings={k: round(v, 2) for k, v in times.items()})


def _int8_agreement(path: Path, bundle: Bundle, head: Any, clips: feat.ClipSet, views: list[feat.View],
                    engine: str, opts: TeachOptions, cancel: threading.Event | None) -> dict:
    """Top-1 agreement of the INT8 taught graph with the FP32 head (numpy, from the cached features) on
    every frame of the clips as the daemon sees them."""
    from edge.classifier import OnlineClassifier
    extra = [_history_state(head)] if head.frames > 1 else []
    taught = bundle.model_copy(update={"states": [*bundle.states, *extra]})
    backend = create_backend(engine, path, threads=opts.threads, precision_hint="f32")
    same = total = 0
    try:
        clf = OnlineClassifier(taught, backend)
        for v in views:
            if v.kind != "plain":
                continue
            if cancel is not None and cancel.is_set():
                raise feat.Cancelled()
            c = clips.clips[v.clip]
            ref = np.argmax(forward(head, v.features), 1)
            clf.reset()
            for j, frame in enumerate(c.frames[::feat.model_step(bundle, c.fps)]):
                same += int(np.argmax(clf.step(frame)) == ref[j])
                total += 1
    finally:
        backend.close()
    return {"frames": total, "agreement": round(same / total, 4) if total else 0.0, "engine": engine}


def _history_state(head: Any) -> Any:
    from edge.bundle import StateSpec
    return StateSpec(input=HISTORY_IN, output=HISTORY_OUT, shape=(1, (head.frames - 1) * head.width))


def _yaml(bundle: Bundle, name: str, labels: list[str], head: Any, files: dict, precision: str,
          counts: dict, made: dict, cv: dict, opts: TeachOptions, seconds: float, agreement: dict | None,
          clips: feat.ClipSet, fp32: onnx.ModelProto, views: list[feat.View]) -> dict:
    raw = yaml.safe_load(bundle.yaml_path.read_text(encoding="utf-8"))
    states = list(raw.get("states") or [])
    if head.frames > 1:
        states.append({"input": HISTORY_IN, "output": HISTORY_OUT, "shape": [1, (head.frames - 1) * head.width]})
    meta = {k: raw[k] for k in ("format", "kind") if k in raw}
    meta.update({"name": name, "arch": raw.get("arch", bundle.arch)})
    if raw.get("width") is not None:
        meta["width"] = raw["width"]
    meta.update({"labels": labels, "input": raw["input"], "output": raw["output"], "states": states,
                 "temporal": raw.get("temporal"), "precision": precision, "files": files})
    figures = {k: cv[k] for k in ("folds", "accuracy", "per_class_recall", "curve", "clips_scored") if k in cv}
    meta["provenance"] = {
        "taught": {"base": bundle.name, "base_graph_sha256": sha256(fp32.SerializeToString()),
                   "base_fp32_file_sha256": sha256(bundle.graph_path("fp32").read_bytes()),
                   "data": str(clips.root), "clips_per_class": counts, "made_by_teach": made,
                   "skipped": len(clips.skipped), "head": opts.head.settings(),
                   "views": {"phases": opts.phases, "augment": opts.augment, "stills": opts.stills,
                             "negatives": {"per_motion": opts.negatives, "kept": sum(1 for v in views
                                                                                      if v.kind == "motion"),
                                           "motions": list(feat.NEGATIVE_MOTIONS) if opts.negatives else []}},
                   "cross_validation": figures, "seconds": round(seconds, 1)}}
    if "int8" in files and agreement is not None:
        meta["quantization"] = {"file": files["int8"], "backbone": f"the INT8 graph of base {bundle.name} "
                                "(its calibration, unchanged)", "head": "float32, not quantized",
                                "base_quantization": (raw.get("quantization") or {}).get("tool"),
                                "agreement_with_fp32": agreement, "min_agreement": MIN_INT8_AGREEMENT}
    return meta
