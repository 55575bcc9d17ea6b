"""``edge-tsm`` command line (also ``python -m edge``).

Each verb's handler imports what it needs when it runs, so ``edge-tsm --help`` and the runtime verbs
never import torch. Errors derived from :class:`edge.errors.EdgeError` print one line and exit with
their sysexits code (64 usage, 65 bad data/model, 66 missing input, 69 device unavailable, 78 config).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.errors import EX_USAGE, EdgeError, PackageMissing, UsageError

logger = logging.getLogger("edge")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# --- dataset ---------------------------------------------------------------------------------------
def cmd_dataset_synth(a: argparse.Namespace) -> int:
    from edge.data.synth import generate_dataset, resolve_classes
    from edge.errors import DataError
    size = _parse_size(a.size, "--size")
    try:
        classes = resolve_classes(a.classes, generator=a.generator)
    except DataError as e:
        raise UsageError(f"dataset synth --classes: {e}") from None
    if a.workers < 1:
        raise UsageError(f"dataset synth --workers {a.workers}: expected >= 1")
    if a.recordings < 0 or a.recording_segments < 1:
        raise UsageError(f"dataset synth --recordings {a.recordings} --recording-segments {a.recording_segments}: "
                         "expected >= 0 recordings of >= 1 motions")
    if a.recordings and a.generator != 5:
        raise UsageError("dataset synth --recordings: recordings are generator-5 scenes; drop --generator 4")
    _check_distractors(a, "synth")
    summary = generate_dataset(a.out, a.per_class, a.seed, size=size, frames=a.frames, fps=a.fps,
                               progress=not a.quiet, classes=classes, generator=a.generator, workers=a.workers,
                               recordings=a.recordings, recording_segments=a.recording_segments,
                               distractors=a.distractors)
    print(json.dumps(summary))
    return 0


def _check_distractors(a: argparse.Namespace, cmd: str) -> None:
    """``dataset synth`` and ``synth-recording``: ``--distractors`` checked by the generator's own rule."""
    from edge.data.occluders import check_distractors
    from edge.errors import DataError
    try:
        check_distractors(a.distractors, a.generator)
    except DataError as e:
        raise UsageError(f"dataset {cmd} --{e}") from None


def cmd_dataset_from_clips(a: argparse.Namespace) -> int:
    from edge.data.fieldclips import from_clips, write_sheet
    if a.sheet:
        if a.labels or a.out:
            raise UsageError("dataset from-clips: --sheet writes a review sheet; give --labels/--out in a second run")
        n = write_sheet(a.spool, a.sheet)
        print(json.dumps({"sheet": a.sheet, "clips": n}))
        return 0
    if not (a.labels and a.out):
        raise UsageError("dataset from-clips: give --labels FILE.csv and --out DIR (or --sheet FILE.csv to "
                         "write a review sheet first)")
    print(json.dumps(from_clips(a.spool, a.labels, a.out)))
    return 0


def cmd_dataset_synth_recording(a: argparse.Namespace) -> int:
    from edge.data.synth import resolve_classes
    from edge.errors import DataError
    try:
        classes = resolve_classes(a.classes, generator=a.generator)
    except DataError as e:
        raise UsageError(f"dataset synth-recording --classes: {e}") from None
    _check_distractors(a, "synth-recording")
    if a.generator == 4:
        if a.classes:
            raise UsageError("dataset synth-recording --generator 4 shows the eight motions of the nine classes: "
                             "drop --classes")
        from edge.demo import make_recording
        rows = make_recording(a.out, a.annotations, segments=a.segments, seed=a.seed)
    else:
        from edge.data.synth_recording import make_recording as make_scene_recording
        rows = make_scene_recording(a.out, a.annotations, segments=a.segments, seed=a.seed, classes=classes,
                                    distractors=a.distractors)
    print(json.dumps({"video": a.out, "annotations": a.annotations, "rows": len(rows),
                      "seconds": round(rows[-1].end_s, 2) if rows else 0.0}))
    return 0


def cmd_dataset_from_recording(a: argparse.Namespace) -> int:
    from edge.data.fieldclips import from_recording
    print(json.dumps(from_recording(a.video, a.annotations, a.out, codec=a.codec)))
    return 0


def _parse_size(text: str, flag: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected WIDTHxHEIGHT such as 160x120") from None
    if w < 16 or h < 16:
        raise UsageError(f"{flag} {text!r}: width and height must be >= 16")
    return w, h


# --- train / export / eval -------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> int:
    try:
        from edge.models import recipe
    except ImportError as e:
        raise PackageMissing(f"train needs the {e.name} package (the train extra): pip install 'edge-tsm[train]'") \
            from None
    from edge.models.distributed import world_from_env
    main_rank = world_from_env().main   # under torchrun: rank 0 alone logs and prints
    if not main_rank:
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    run = {"device": a.device, "amp": a.amp, "workers": a.workers, "sync_bn": not a.no_sync_bn,
           "dist_timeout": a.dist_timeout, "float64": a.float64, "cache_gb": a.cache_gb}
    if a.recipe:
        out = recipe.run_recipe(a.recipe, out=a.out, data_dir=a.data_dir, no_shift=a.no_shift,
                                ablation=a.ablation, threads=a.threads, max_steps=a.max_steps, run=run, init=a.init)
        if main_rank:
            print(out)
        return 0
    if not a.data:
        raise UsageError("train: give --data DIR (a ROOT/<label>/*.mp4 dataset) or --recipe default")
    from edge.models.train import TrainConfig, train
    cfg = TrainConfig(data=a.data, out=a.out, val=a.val, split=a.split, size=a.size, width=a.width,
                      frames=a.frames, stride=a.stride, epochs=a.epochs, batch=a.batch, lr=a.lr, optimizer=a.optimizer,
                      weight_decay=a.weight_decay, shift="none" if a.no_shift else a.shift, seed=a.seed,
                      threads=a.threads, init=a.init, resume=a.resume, max_steps=a.max_steps, name=a.name,
                      dropout=a.dropout, balance=a.balance, **run)
    out = train(cfg, progress=not a.quiet)
    if main_rank:
        print(out)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    try:
        from edge.models.export import export_checkpoint
    except ImportError as e:
        raise PackageMissing(f"export needs the {e.name} package (the train extra): pip install 'edge-tsm[train]'") \
            from None
    print(export_checkpoint(a.checkpoint, a.out, arch=a.arch, labels=a.labels, size=a.size, name=a.name))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from edge.models.evaluate import evaluate, format_report, plot_confusion
    result = evaluate(a.model, a.data, engine=a.engine, precision=a.precision, split=a.split, device=a.device,
                      progress=not a.quiet and not a.json)
    if a.plot:
        plot_confusion(result, a.plot)
    print(json.dumps(result) if a.json else format_report(result))
    return 0


# --- calibrate / quantize ----------------------------------------------------------------------------
def cmd_calibrate_collect(a: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.calibration.collect import CollectOptions, collect_synth, collect_videos
    if bool(a.sources) == bool(a.synth):
        raise UsageError("calibrate collect: give either --from VIDEO_OR_DIR... (recordings) or --synth")
    bundle = load_bundle(a.model)
    if a.synth:
        summary = collect_synth(a.out, bundle, per_class=a.per_class, seed=a.seed, max_frames=a.max_frames,
                                progress=not a.quiet)
    else:
        opts = CollectOptions(max_frames=a.max_frames, segment=a.segment, min_diff=a.min_diff, max_side=a.max_side)
        summary = collect_videos(a.sources, a.out, bundle, opts, progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    import importlib.util
    for package in ("onnxruntime", "sympy"):  # sympy: onnxruntime's shape inference (pre-processing) needs it
        if importlib.util.find_spec(package) is None:
            raise PackageMissing(f"quantize needs the {package} package (the quantize extra): "
                                 "pip install 'edge-tsm[quantize]'")
    from edge.calibration.pipeline import recipe_inputs, run_quantize
    from edge.calibration.quantize import QuantizeOptions
    settings = {"calib": a.calib, "eval": a.eval, "method": a.method, "per_channel": a.per_channel,
                "max_drop": a.max_drop, "min_agreement": a.min_agreement}
    if a.recipe:
        from edge.calibration.quantize import fp32_bundle
        made = recipe_inputs(a.recipe, fp32_bundle(a.model), a.data_dir, progress=not a.quiet)
        settings = {k: made[k] if v is None else v for k, v in settings.items()}
    if settings["calib"] is None:
        raise UsageError("quantize: give --calib DIR (a set from edge-tsm calibrate collect) or --recipe default")
    opts = QuantizeOptions(method=settings["method"] or "minmax",
                           per_channel=True if settings["per_channel"] is None else settings["per_channel"],
                           engine_target=a.engine_target, threads=a.threads, types=a.types,
                           reduce_range=a.reduce_range)
    res = run_quantize(a.model, settings["calib"], out=a.out, opts=opts, eval_data=settings["eval"], split=a.split,
                       max_drop=1.0 if settings["max_drop"] is None else settings["max_drop"],
                       min_agreement=settings["min_agreement"], debug=a.debug, bench=a.bench, progress=not a.quiet)
    if "debug" in res:
        from edge.calibration.debug import format_debug
        print(format_debug(res["debug"]), file=sys.stderr)
    if "bench" in res:
        from edge.bench.int8 import format_bench
        print(format_bench(res["bench"]), file=sys.stderr)
    print(json.dumps(res))
    return 0


# --- classify / run --------------------------------------------------------------------------------
def _print_event(ev: Any, seq: int) -> None:
    print(json.dumps(ev.record(seq), separators=(",", ":")), flush=True)


def cmd_classify(a: argparse.Namespace) -> int:
    from edge.classify import classify_video
    res = classify_video(a.video, model=a.model, engine=a.engine, precision=a.precision, device=a.device,
                         threads=a.threads, per_frame=a.per_frame, camera=a.camera, on_event=_print_event)
    logger.info("%d frames at %.1f frames/s, %d events", res.frames_read, res.classify_fps, len(res.events))
    return 0


def cmd_teach(a: argparse.Namespace) -> int:
    from edge.teach.cli import run
    return run(a)


def cmd_studio(a: argparse.Namespace) -> int:
    from edge.studio.server import serve
    return serve(a)


def cmd_eval_events(a: argparse.Namespace) -> int:
    from edge.evalevents import evaluate_events, evaluate_recordings, format_pooled, format_report
    model, events, where = a.model, None, "config"
    if a.config:
        from edge.config import load_config
        cfg = load_config(a.config)
        model, events, where = model or cfg.model, cfg.events, f"config {a.config}"
    kw = {"model": model or "default", "engine": a.engine, "precision": a.precision, "device": a.device,
          "threads": a.threads, "events": events, "tolerance_s": a.tolerance, "where": where}
    if len(a.video) == 1:
        ann = a.annotations or _sibling_csv(a.video[0])
        res = evaluate_events(a.video[0], ann, **kw)
        print(json.dumps(res) if a.json else format_report(res))
        return 0
    if a.annotations:
        raise UsageError(f"eval-events: {len(a.video)} recordings take their annotations from beside them "
                         "(VIDEO's name with .csv); --annotations is for one recording")
    many = evaluate_recordings(a.video, [_sibling_csv(v) for v in a.video], **kw)
    print(json.dumps(many) if a.json else format_pooled(many["recordings"], many["total"]))
    return 0


def _sibling_csv(video: str) -> Path:
    """A recording's annotations when ``--annotations`` is not given: beside it, its name with ``.csv``."""
    ann = Path(video).with_suffix(".csv")
    if not ann.is_file():
        raise UsageError(f"eval-events {video}: no annotations: {ann} does not exist (give --annotations CSV for "
                         "one recording, or put each recording's start,end,label rows beside it)")
    return ann


def cmd_run(a: argparse.Namespace) -> int:
    if not a.demo:
        from edge.daemon import serve
        return serve(a.config, keep_log_level=bool(a.quiet or a.verbose))
    import tempfile
    import time

    from edge.classify import classify_video
    from edge.demo import make_demo_clip
    with tempfile.TemporaryDirectory(prefix="edge-tsm-demo-") as tmp:
        clip = Path(tmp) / "demo.avi"
        segments = make_demo_clip(clip)
        t0 = time.time()
        print("demo: a generated 640x480 clip shows " + ", ".join(
            f"{s.label} at {s.start_s:.1f}-{s.end_s:.1f} s" for s in segments), file=sys.stderr)
        res = classify_video(clip, model=a.model, engine=a.engine, precision=a.precision, device=a.device,
                             camera="demo", start_time=t0, on_event=_print_event)
    starts = [e for e in res.events if e.kind == "start"]
    hits = sum(1 for s in segments if any(e.label == s.label for e in starts
                                          if s.start_s - 0.5 <= e.ts - t0 <= s.end_s + 1.5))
    print(f"demo: {len(segments)} motions shown, {len(starts)} events started, {hits} of the motions "
          f"recognised; {res.frames_read} frames at {res.classify_fps:.0f} frames/s", file=sys.stderr)
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.daemon import check
    cfg = load_config(a.config)
    p = check(cfg, f"config {a.config}")
    selfcheck = ""
    if a.int8_check:  # FP32 vs INT8 on this CPU; a departure is a WARNING line, not a failure
        from edge.int8check import for_config
        res = for_config(cfg, p.bundle)
        if res is not None:
            selfcheck = "; INT8 self-check " + ("passed" if res["passed"] else "WARNING (see above)")
    print(f"{a.config}: ok: model {p.bundle.name if p.bundle else cfg.model}, {len(cfg.cameras)} camera(s) "
          f"({', '.join(c.name for c in cfg.cameras)}), {len(cfg.sinks)} sink(s), ready in {p.ready_s:.2f} s"
          f"{selfcheck}")
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    from edge.config import json_schema, load_config
    if a.schema:
        print(json_schema())
        return 0
    cfg = load_config(a.config)
    print(json.dumps(cfg.model_dump(mode="json"), indent=1))
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from edge.metrics import format_status, prometheus_text, read_status
    if a.state_dir:
        folder = Path(a.state_dir)
    else:
        from edge.config import load_config
        from edge.journal import state_dir
        folder = state_dir(load_config(a.config))
    snap = read_status(folder)
    print(json.dumps(snap, indent=1) if a.json else prometheus_text(snap) if a.prometheus else format_status(snap))
    return 0


def cmd_install_service(a: argparse.Namespace) -> int:
    from edge import service
    files = service.plan(Path(a.config), user=a.user, root=Path(a.root),
                         jetson=True if a.jetson else None, network=True if a.network else None)
    service.install(files, dry_run=a.dry_run)
    print(("(dry run: nothing written) " if a.dry_run else "") + service.next_steps(files), file=sys.stderr)
    return 0


def cmd_devices(a: argparse.Namespace) -> int:
    from edge import devices
    report = devices.survey(Path(a.root))
    print(json.dumps(report, indent=1) if a.json else devices.render(report))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from edge.bench import BenchOptions, format_table, run_bench, tiny_options
    kw = {"engines": [e for e in a.engines.split(",") if e] if a.engines else None, "precision": a.precision,
          "threads": a.threads, "model_rate": a.model_rate, "int8_from_calib": a.int8_from_calib}
    if not a.torch:
        kw["torch"] = False
    if not a.daemon:
        kw["daemon"] = False
    for key in ("seconds", "rounds", "steps"):
        if getattr(a, key) is not None:
            kw[key] = getattr(a, key)
    if a.streams is not None:
        kw["max_streams"] = a.streams
    if a.max_batch is not None:
        kw["max_batch"] = a.max_batch
    if a.batch is not None:
        kw["batch"] = a.batch
    if a.decode_scale is not None:
        kw["decode_scale"] = a.decode_scale if a.decode_scale == "auto" else int(a.decode_scale)
    if a.size is not None:
        kw["size"] = _parse_size(a.size, "--size")
    opts = tiny_options(a.model, **kw) if a.tiny else BenchOptions(model=a.model, **kw)
    res = run_bench(opts)
    print(json.dumps(res) if a.json else format_table(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    from edge.cliargs import build_parser
    for stream in (sys.stdout, sys.stderr):  # a path with undecodable bytes is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors; sysexits says 64
        return EX_USAGE if e.code not in (0, None) else 0
    _setup_logging(-1 if a.quiet else a.verbose)
    func = getattr(a, "func", None)
    if isinstance(func, str):  # the handler's name (edge.cliargs)
        func = globals()[func]
    if func is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        return int(func(a) or 0)
    except EdgeError as e:
        msg = " ".join(str(e).splitlines())  # one line, whatever a value held (\n, \r, \x85, \u2028...)
        print(f"edge-tsm: error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edge-tsm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
