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

from edge import __version__
from edge.config import DEFAULT_CONFIG
from edge.errors import EX_USAGE, EdgeError, UsageError

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
    from edge.data.synth import generate_dataset
    size = _parse_size(a.size, "--size")
    summary = generate_dataset(a.out, a.per_class, a.seed, size=size, frames=a.frames, fps=a.fps,
                               progress=not a.quiet)
    print(json.dumps(summary))
    return 0


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
    from edge.demo import make_recording
    rows = make_recording(a.out, a.annotations, segments=a.segments, seed=a.seed)
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
        raise UsageError(f"train needs the train extra ({e.name} is missing): pip install 'edge-tsm[train]'") from None
    if a.recipe:
        out = recipe.run_recipe(a.recipe, out=a.out, data_dir=a.data_dir, no_shift=a.no_shift,
                                ablation=a.ablation, threads=a.threads, max_steps=a.max_steps)
        print(out)
        return 0
    if not a.data:
        raise UsageError("train: give --data DIR (a ROOT/<label>/*.mp4 dataset) or --recipe default")
    from edge.models.train import TrainConfig, train
    cfg = TrainConfig(data=a.data, out=a.out, val=a.val, split=a.split, size=a.size, width=a.width,
                      frames=a.frames, stride=a.stride, epochs=a.epochs, batch=a.batch, lr=a.lr, optimizer=a.optimizer,
                      weight_decay=a.weight_decay, shift="none" if a.no_shift else a.shift, seed=a.seed,
                      threads=a.threads, init=a.init, resume=a.resume, max_steps=a.max_steps, name=a.name)
    print(train(cfg, progress=not a.quiet))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    try:
        from edge.models.export import export_checkpoint
    except ImportError as e:
        raise UsageError(f"export needs the train extra ({e.name} is missing): pip install 'edge-tsm[train]'") from None
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
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError("quantize needs onnxruntime (its quantization tools): pip install 'edge-tsm[quantize]'")
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
                           engine_target=a.engine_target, threads=a.threads)
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


def cmd_eval_events(a: argparse.Namespace) -> int:
    from edge.evalevents import evaluate_events, format_report
    model, events, where = a.model, None, "config"
    if a.config:
        from edge.config import load_config
        cfg = load_config(a.config)
        model, events, where = model or cfg.model, cfg.events, f"config {a.config}"
    res = evaluate_events(a.video, a.annotations, model=model or "default", engine=a.engine, precision=a.precision,
                          device=a.device, threads=a.threads, events=events, tolerance_s=a.tolerance, where=where)
    print(json.dumps(res) if a.json else format_report(res))
    return 0


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
    print(f"{a.config}: ok: model {p.bundle.name if p.bundle else cfg.model}, {len(cfg.cameras)} camera(s) "
          f"({', '.join(c.name for c in cfg.cameras)}), {len(cfg.sinks)} sink(s), ready in {p.ready_s:.2f} s")
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


# --- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-tsm", description="Online TSM video classification for edge devices.")
    p.add_argument("--version", action="version", version=f"edge-tsm {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    ds = sub.add_parser("dataset", help="make datasets in the ROOT/<label>/*.mp4 layout")
    dsub = ds.add_subparsers(dest="dataset_verb", metavar="KIND")
    sy = dsub.add_parser("synth", help="procedural motion clips (9 classes told apart only over time)")
    sy.add_argument("--out", required=True, help="dataset folder to write")
    sy.add_argument("--per-class", type=int, default=100, help="clips per class (default 100)")
    sy.add_argument("--seed", type=int, default=0, help="random seed; another seed gives a held-out split")
    sy.add_argument("--size", default="160x120", help="frame size WIDTHxHEIGHT (default 160x120)")
    sy.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    sy.add_argument("--fps", type=float, default=15.0, help="frame rate written to the files (default 15)")
    sy.set_defaults(func=cmd_dataset_synth)
    sr = dsub.add_parser("synth-recording", help="a generated long recording (640x480 MJPG) and its start,end,label "
                                                 "annotations: to try the field loop without a camera")
    sr.add_argument("--out", required=True, help="the video to write (.avi)")
    sr.add_argument("--annotations", required=True, help="the CSV to write (start,end,label; stills as no_motion)")
    sr.add_argument("--segments", type=int, default=24, help="motions in it (default 24)")
    sr.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    sr.set_defaults(func=cmd_dataset_synth_recording)
    fc = dsub.add_parser("from-clips", help="reviewed field clips (the daemon's clips spool) -> a dataset")
    fc.add_argument("--spool", required=True, help="the daemon's clips folder (clips.dir)")
    fc.add_argument("--sheet", help="write a review sheet (CSV: clip,label,predicted,...; label empty) and stop")
    fc.add_argument("--labels", help="the reviewed CSV: clip,label per row (empty or 'skip': left out)")
    fc.add_argument("--out", help="dataset folder to add the labelled clips to (ROOT/<label>/)")
    fc.set_defaults(func=cmd_dataset_from_clips)
    fr = dsub.add_parser("from-recording", help="cut a long recording by start,end,label rows into a dataset")
    fr.add_argument("video", help="the recording (any file OpenCV reads)")
    fr.add_argument("--annotations", required=True, help="CSV rows start,end,label (seconds or [HH:]MM:SS.fff)")
    fr.add_argument("--out", required=True, help="dataset folder to write the clips into (ROOT/<label>/)")
    fr.add_argument("--codec", choices=["mjpg", "mp4v"], default="mjpg", help="mjpg (.avi, default) or mp4v (.mp4)")
    fr.set_defaults(func=cmd_dataset_from_recording)

    tr = sub.add_parser("train", help="train a MobileNetV2-TSM and export it as a bundle (needs [train])")
    tr.add_argument("--data", help="training dataset ROOT/<label>/*.mp4")
    tr.add_argument("--out", required=True, help="output folder: the bundle plus checkpoint.pt")
    tr.add_argument("--recipe", choices=["default"], help="reproduce the embedded default model end to end")
    tr.add_argument("--data-dir", default="data", help="with --recipe: where the generated datasets go")
    tr.add_argument("--ablation", action="store_true", help="with --recipe: also train the --no-shift ablation")
    tr.add_argument("--val", help="a held-out dataset scored at the end (offline causal model)")
    tr.add_argument("--split", help="use ROOT/<split>.txt to select the training clips")
    tr.add_argument("--size", type=int, default=112, help="square input size (default 112)")
    tr.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width multiplier (default 1.0)")
    tr.add_argument("--frames", type=int, default=8, help="frames per training clip (default 8)")
    tr.add_argument("--stride", type=int, default=3, help="frame stride inside a clip (default 3)")
    tr.add_argument("--epochs", type=int, default=8)
    tr.add_argument("--batch", type=int, default=16, help="clips per step (default 16)")
    tr.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default 0.01)")
    tr.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                    help="sgd: momentum 0.9, Nesterov (default); adamw")
    tr.add_argument("--weight-decay", type=float, default=1e-4)
    tr.add_argument("--shift", choices=["causal", "bidirectional"], default="causal",
                    help="temporal shift (causal runs online unchanged; default causal)")
    tr.add_argument("--no-shift", action="store_true", help="no temporal shift: the TSN-style ablation")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--init", help="fine-tune from a checkpoint file or a bundle folder with weights.pt")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    tr.add_argument("--name", help="bundle name (default: the output folder's name)")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="checkpoint (ours or reference TSM) -> online ONNX bundle (needs [train])")
    ex.add_argument("--checkpoint", required=True, help="a .pt/.pth/.tar checkpoint")
    ex.add_argument("--arch", default="mobilenetv2_tsm", help="network architecture (mobilenetv2_tsm)")
    ex.add_argument("--labels", help="label preset (jester) or a text file, one label per line")
    ex.add_argument("--size", type=int, help="input size (default: the checkpoint's, 224 for reference ones)")
    ex.add_argument("--name", help="bundle name (default: the output folder's name)")
    ex.add_argument("--out", required=True, help="bundle folder to write")
    ex.set_defaults(func=cmd_export)

    ca = sub.add_parser("calibrate", help="INT8 calibration sets")
    csub = ca.add_subparsers(dest="calibrate_verb", metavar="KIND")
    co = csub.add_parser("collect", help="a calibration set from recordings (keyframes by frame difference, short "
                                         "sequences around them at the model's frame rate) or rendered clips")
    co.add_argument("--from", dest="sources", nargs="+", metavar="VIDEO_OR_DIR",
                    help="recordings of the deployment camera: video files or folders of them")
    co.add_argument("--synth", action="store_true", help="render procedural clips instead (the embedded model's "
                                                          "reproducible default set)")
    co.add_argument("--out", required=True, help="folder to write (calib.json + seg_*.npz)")
    co.add_argument("--model", default="default",
                    help="bundle whose frame rate the sequences follow (default: default)")
    co.add_argument("--max-frames", type=int, default=600, help="size limit: graph frames in the set (default 600)")
    co.add_argument("--segment", type=int, default=16, help="graph frames per sequence (default 16)")
    co.add_argument("--min-diff", type=float, default=2.0,
                    help="keyframe threshold: mean absolute grey-level difference between graph frames (default 2)")
    co.add_argument("--max-side", type=int, default=640, help="downscale larger frames to this many pixels on their "
                                                              "long side; 0 keeps them (default 640)")
    co.add_argument("--per-class", type=int, default=8, help="with --synth: clips per class (default 8)")
    co.add_argument("--seed", type=int, default=2, help="with --synth: seed (default 2; 0 trains, 1 is held out)")
    co.set_defaults(func=cmd_calibrate_collect)

    qz = sub.add_parser("quantize", help="INT8 QDQ graph (model.int8.onnx) from a calibration set; made the default "
                                         "only if the accuracy guard passes",
                        description="Exit 0 also when the guard refuses INT8 as the default: the file is kept, "
                                    "precision stays fp32 and a WARNING line says why (the JSON says default: false).")
    qz.add_argument("--model", required=True, help="bundle folder with an FP32 graph (changed in place unless --out)")
    qz.add_argument("--calib", help="calibration set folder (edge-tsm calibrate collect)")
    qz.add_argument("--recipe", choices=["default"], help="the embedded model's recipe: renders the calibration and "
                                                          "held-out sets if missing, drop <= 0.5, agreement >= 0.99")
    qz.add_argument("--data-dir", default="data", help="with --recipe: where its sets live (default data)")
    qz.add_argument("--method", choices=["minmax", "entropy", "percentile"], help="calibration method (default minmax)")
    qz.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                    help="per-output-channel weight scales (default: on)")
    qz.add_argument("--engine-target", choices=["both", "onnxruntime", "openvino"], default="both",
                    help="engines the guard and --bench check (the QDQ graph is the same for both; default both)")
    qz.add_argument("--eval", help="held-out dataset ROOT/<label>/*.mp4: FP32 vs INT8 accuracy guard")
    qz.add_argument("--split", help="with --eval: use ROOT/<split>.txt")
    qz.add_argument("--max-drop", type=float, help="largest accuracy drop (points) for INT8 to become the default "
                                                   "(default 1.0)")
    qz.add_argument("--min-agreement", type=float, help="also require this top-1 agreement (0..1) with FP32")
    qz.add_argument("--debug", type=int, nargs="?", const=10, default=0, metavar="N",
                    help="report the N layers with the largest quantization error (default N 10)")
    qz.add_argument("--bench", action="store_true", help="time FP32 vs INT8 per-frame steps afterwards")
    qz.add_argument("--threads", type=int, help="engine threads for calibration, checks and --bench")
    qz.add_argument("--out", help="write a quantized copy of the bundle here instead of changing it in place")
    qz.set_defaults(func=cmd_quantize)

    rn = sub.add_parser("run", help="the daemon (foreground); --demo: the embedded model on a generated clip")
    rn.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    rn.add_argument("--demo", action="store_true", help="classify a generated clip and print the events")
    _engine_args(rn)
    rn.set_defaults(func=cmd_run)

    ck = sub.add_parser("check", help="validate the config, load the model, open cameras and sinks; "
                                      "exit 0 only if run would start")
    ck.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    ck.set_defaults(func=cmd_check)

    stt = sub.add_parser("status", help="how the running daemon does: cameras, inference, events, sink backlogs")
    stt.add_argument("--config", default=DEFAULT_CONFIG, help=f"the daemon's config (default {DEFAULT_CONFIG})")
    stt.add_argument("--state-dir", help="read the status from this state directory instead")
    stt.add_argument("--json", action="store_true", help="one JSON object")
    stt.add_argument("--prometheus", action="store_true", help="Prometheus exposition text")
    stt.set_defaults(func=cmd_status)

    inst = sub.add_parser("install-service", help="write the systemd unit (for this environment), its drop-ins "
                                                  "and a default config")
    inst.add_argument("--config", default=DEFAULT_CONFIG, help=f"config the service runs (default {DEFAULT_CONFIG}); "
                                                               "a default one is written if missing")
    inst.add_argument("--user", help="run as this existing user instead of a dynamic one")
    inst.add_argument("--dry-run", action="store_true", help="print what would be written")
    inst.add_argument("--root", default="/", help="write under this root (building an image)")
    inst.add_argument("--jetson", action="store_true", help="add the Jetson drop-in and udev rule (auto-detected)")
    inst.add_argument("--network", action="store_true", help="allow network (auto when the config has an mqtt sink)")
    inst.set_defaults(func=cmd_install_service)

    dv = sub.add_parser("devices", help="cameras, serial ports, GPIO chips, accelerators and engines on this machine")
    dv.add_argument("--json", action="store_true", help="print one JSON object")
    dv.add_argument("--root", default="/", help="look under this root instead (a mounted image); opens no device")
    dv.set_defaults(func=cmd_devices)

    cf = sub.add_parser("config", help="--schema: the config's JSON schema; otherwise the validated config "
                                       "with every default filled in")
    cf.add_argument("--schema", action="store_true", help="print the JSON schema")
    cf.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    cf.set_defaults(func=cmd_config)

    cl = sub.add_parser("classify", help="events (JSON lines) from a video file")
    cl.add_argument("video", help="a video file OpenCV can decode (mp4v, MJPG, ...)")
    _engine_args(cl)
    cl.add_argument("--threads", type=int, help="engine threads (default: the engine's choice)")
    cl.add_argument("--camera", help="camera name in the events (default: the file's name)")
    cl.add_argument("--per-frame", metavar="CSV",
                    help="write per-frame probabilities (frame, time, one column per label)")
    cl.set_defaults(func=cmd_classify)

    ee = sub.add_parser("eval-events", help="precision, recall and latency of the events on an annotated recording",
                        description="Runs a recording through the model and the event detector (the settings of "
                                    "--config's events section, or the model's defaults) and matches the events to "
                                    "start,end,label rows (as for 'dataset from-recording'; background labels such "
                                    "as no_motion are not targets).")
    ee.add_argument("video", help="the recording (a video file OpenCV can decode)")
    ee.add_argument("--annotations", required=True, metavar="CSV", help="start,end,label rows (seconds, MM:SS.fff "
                                                                         "or HH:MM:SS.fff)")
    ee.add_argument("--config", help="a daemon config: its events section (and its model unless --model)")
    _engine_args(ee)
    ee.add_argument("--threads", type=int, help="engine threads (default: the engine's choice)")
    ee.add_argument("--tolerance", type=float, default=0.5, metavar="S",
                    help="an event may start or end this many seconds outside its segment (default 0.5)")
    ee.add_argument("--json", action="store_true", help="print one JSON object")
    ee.set_defaults(func=cmd_eval_events, model=None)  # --model: default the config's, else 'default'

    bn = sub.add_parser("bench", help="per-stage and whole-pipeline figures, side by side in one run",
                        description="Decode, preprocessing, each engine and precision, PyTorch eager (if installed) "
                                    "and the whole pipeline per frame in interleaved rounds; then the most 30 fps "
                                    "streams one pipeline sustains; then the daemon itself (ready time, CPU, RSS).")
    bn.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    bn.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bn.add_argument("--streams", type=int, metavar="N", help="most streams to try (default 32)")
    bn.add_argument("--seconds", type=float, metavar="S", help="length of each streams count and daemon run "
                                                               "(default 5)")
    bn.add_argument("--engines", help="comma-separated (default: every installed engine; the first runs the "
                                      "pipeline, streams and daemon)")
    bn.add_argument("--size", help="camera frame WIDTHxHEIGHT (default 640x480)")
    bn.add_argument("--precision", choices=["fp32", "int8"], help="pipeline, streams and daemon runs "
                                                                  "(default: int8 if the bundle has it)")
    bn.add_argument("--threads", type=int, help="engine and torch threads (default: the engine's, as the daemon)")
    bn.add_argument("--max-batch", type=int, metavar="N", help="engine.max_batch for the streams runs "
                                                               "(default: the daemon's, 4; 1 turns batching off)")
    bn.add_argument("--batch", type=int, metavar="B", help="also time B cameras' frames per engine call (the "
                                                           "batched graph), per frame (default 4; 0: off)")
    bn.add_argument("--decode-scale", choices=["auto", "1", "2", "4", "8"],
                    help="camera.decode_scale of the bench's cameras (default auto, as the daemon)")
    bn.add_argument("--rounds", type=int, help="interleaved rounds (default 20)")
    bn.add_argument("--steps", type=int, help="items per variant per round (default 20)")
    bn.add_argument("--model-rate", action="store_true", help="send frames to the model at the bundle's decision "
                                                             "rate, as the daemon does (default: every frame)")
    bn.add_argument("--int8-from-calib", metavar="DIR|synth", help="if the bundle has no INT8 graph: quantize a "
                                                                    "copy with this calibration set (or a small "
                                                                    "synthetic one) and bench both precisions")
    bn.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch-eager reference")
    bn.add_argument("--no-daemon", dest="daemon", action="store_false", help="skip the daemon runs")
    bn.add_argument("--tiny", action="store_true", help="a seconds-long setting for CI (few rounds, 0.5 s runs)")
    bn.set_defaults(func=cmd_bench)

    ev = sub.add_parser("eval", help="accuracy, macro-F1, confusion of a bundle on a dataset (runtime engines)")
    ev.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    ev.add_argument("--data", required=True, help="dataset ROOT/<label>/*.mp4")
    ev.add_argument("--split", help="use ROOT/<split>.txt")
    ev.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino")
    ev.add_argument("--device", default="CPU", help="engine device (CPU, GPU, NPU, AUTO, cuda, tensorrt)")
    ev.add_argument("--precision", choices=["fp32", "int8"], help="graph to run (default: the bundle's)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--plot", help="write the confusion matrix as a PNG")
    ev.set_defaults(func=cmd_eval)
    return p


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino (default: onnxruntime)")
    p.add_argument("--device", default="CPU", help="engine device (CPU, GPU, NPU, AUTO, cuda, tensorrt)")
    p.add_argument("--precision", choices=["fp32", "int8"], help="graph to run (default: the bundle's)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors; sysexits says 64
        return EX_USAGE if e.code not in (0, None) else 0
    _setup_logging(-1 if a.quiet else a.verbose)
    func = getattr(a, "func", None)
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
