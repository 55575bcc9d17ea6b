"""The ``edge-tsm`` argument parser: every verb and flag (the handlers are in :mod:`edge.cli`).

Each verb's ``func`` default names its handler in :mod:`edge.cli`, so building the parser imports nothing
but argparse (``edge-tsm --help`` stays fast and torch-free).
"""
from __future__ import annotations

import argparse

from edge import __version__
from edge.config import DEFAULT_CONFIG


# --- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-tsm", description="Online TSM video classification for edge devices.")
    p.add_argument("--version", action="version", version=f"edge-tsm {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    ds = sub.add_parser("dataset", help="make datasets in the ROOT/<label>/*.mp4 layout")
    dsub = ds.add_subparsers(dest="dataset_verb", metavar="KIND")
    sy = dsub.add_parser("synth", help="procedural motion clips told apart only over time (the nine classes; "
                                         "--classes for more)")
    sy.add_argument("--out", required=True, help="dataset folder to write")
    sy.add_argument("--per-class", type=int, default=100, help="clips per class (default 100)")
    sy.add_argument("--seed", type=int, default=0, help="random seed; another seed gives a held-out split")
    sy.add_argument("--size", default="160x120", help="frame size WIDTHxHEIGHT (default 160x120)")
    sy.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    sy.add_argument("--fps", type=float, default=15.0, help="frame rate written to the files (default 15)")
    sy.add_argument("--classes", help="comma-separated class names and sets: default (the nine), extra (diagonal "
                                       "swipes, shake, wave, approach_and_leave, tilt_left/right), all; e.g. "
                                       "no_motion,extra (default: default). See docs/dataset.md")
    sy.add_argument("--generator", type=int, choices=[4, 5], default=5,
                    help="5 (default): scenes with photographs, arms, distractors, slow motions, tilts in depth; "
                         "4: the embedded model's data (its card's held-out set is --generator 4 --seed 1)")
    sy.add_argument("--workers", type=int, default=1,
                    help="processes rendering clips (default 1); the files are the same for any number")
    sy.add_argument("--recordings", type=int, default=0,
                    help="also this many continuous annotated recordings in OUT/recordings (generator 5): training "
                         "takes windows of them labelled frame by frame (default 0)")
    sy.add_argument("--recording-segments", type=int, default=6, help="motions per recording (default 6)")
    sy.add_argument("--distractors", type=float,
                    help="generator 5: the chance in [0, 1] that a clip's scene has smaller things moving elsewhere "
                         "(default: 0.25 + 0.5 x the clip's difficulty, about half); recordings keep their own")
    sy.set_defaults(func="cmd_dataset_synth")
    sr = dsub.add_parser("synth-recording", help="a generated long recording (640x480 MJPG, one continuous scene) and "
                                                 "its start,end,label annotations: the field loop and eval-events "
                                                 "without a camera")
    sr.add_argument("--out", required=True, help="the video to write (.avi)")
    sr.add_argument("--annotations", required=True, help="the CSV to write (start,end,label; stills as no_motion)")
    sr.add_argument("--segments", type=int, default=24, help="motions in it (default 24)")
    sr.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    sr.add_argument("--classes", help="the motions to show: class names and sets as dataset synth takes them "
                                       "(default: the nine)")
    sr.add_argument("--generator", type=int, choices=[4, 5], default=5,
                    help="5 (default): one continuous scene, no cut; 4: a new generator-4 scene for each motion "
                         "(the recordings made before generator 5)")
    sr.add_argument("--distractors", type=float,
                    help="generator 5: the chance in [0, 1] that the scene has smaller things moving elsewhere "
                         "(default: 0.25 + 0.5 x the scene's difficulty); 1: always, for a harder test")
    sr.set_defaults(func="cmd_dataset_synth_recording")
    fc = dsub.add_parser("from-clips", help="reviewed field clips (the daemon's clips spool) -> a dataset")
    fc.add_argument("--spool", required=True, help="the daemon's clips folder (clips.dir)")
    fc.add_argument("--sheet", help="write a review sheet (CSV: clip,label,predicted,...; label empty) and stop")
    fc.add_argument("--labels", help="the reviewed CSV: clip,label per row (empty or 'skip': left out)")
    fc.add_argument("--out", help="dataset folder to add the labelled clips to (ROOT/<label>/)")
    fc.set_defaults(func="cmd_dataset_from_clips")
    fr = dsub.add_parser("from-recording", help="cut a long recording by start,end,label rows into a dataset")
    fr.add_argument("video", help="the recording (any file OpenCV reads)")
    fr.add_argument("--annotations", required=True, help="CSV rows start,end,label (seconds or [HH:]MM:SS.fff)")
    fr.add_argument("--out", required=True, help="dataset folder to write the clips into (ROOT/<label>/)")
    fr.add_argument("--codec", choices=["mjpg", "mp4v"], default="mjpg", help="mjpg (.avi, default) or mp4v (.mp4)")
    fr.set_defaults(func="cmd_dataset_from_recording")

    tr = sub.add_parser("train", help="train a MobileNetV2-TSM and export it as a bundle (needs [train])")
    tr.add_argument("--data", help="training dataset ROOT/<label>/*.mp4")
    tr.add_argument("--out", required=True, help="output folder: the bundle plus checkpoint.pt")
    tr.add_argument("--recipe", choices=["default", "v2"],
                    help="default: reproduce the embedded default model end to end; v2: the next default's candidate, "
                         "from the default's weights (trained first unless --init gives its bundle)")
    tr.add_argument("--data-dir", default="data", help="with --recipe: where the generated datasets go")
    tr.add_argument("--ablation", action="store_true", help="with --recipe: also train the --no-shift ablation")
    tr.add_argument("--val", help="a held-out dataset scored at the end (offline causal model)")
    tr.add_argument("--split", help="use ROOT/<split>.txt to select the training clips")
    tr.add_argument("--size", default="112",
                    help="input size: a square side or WIDTHxHEIGHT, e.g. 160x120 for a 4:3 camera (default 112)")
    tr.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width multiplier (default 1.0)")
    tr.add_argument("--frames", type=int, default=8, help="frames per training clip (default 8)")
    tr.add_argument("--stride", type=int, default=3, help="frame stride inside a clip (default 3)")
    tr.add_argument("--epochs", type=int, default=8)
    tr.add_argument("--batch", type=int, default=16,
                    help="clips per step over all processes; under torchrun each takes batch/N (default 16)")
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
    tr.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N")
    tr.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                    help="mixed precision: fp16 (CUDA, with a gradient scaler), bf16 (CUDA, or a CPU with native "
                         "bf16), off; auto decides by the device and, on a bf16 CPU, by measurement (default)")
    tr.add_argument("--workers", type=int, help="loader processes decoding and augmenting clips (0: in the training "
                                                "process; default: the cores the compute threads leave)")
    tr.add_argument("--cache-gb", type=float,
                    help="decoded clips kept in memory up to this many GB per process (0: stream from disk; default: "
                         "half the memory available, shared by the processes on this machine)")
    tr.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier (default 0.2)")
    tr.add_argument("--balance", action="store_true",
                    help="the exported graph scores the labels as if the training data held them equally (logit "
                         "offsets counted from the data: for data mostly no_motion, e.g. continuous recordings)")
    tr.add_argument("--no-sync-bn", action="store_true",
                    help="under torchrun: batch norm per process instead of over the global batch")
    tr.add_argument("--dist-timeout", type=float, default=600.0,
                    help="under torchrun: seconds to wait for the other processes (default 600)")
    tr.add_argument("--float64", action="store_true",
                    help="train in double precision: slow; for exact comparisons of runs (N processes against one)")
    tr.set_defaults(func="cmd_train")

    ex = sub.add_parser("export", help="checkpoint (ours or reference TSM) -> online ONNX bundle (needs [train])")
    ex.add_argument("--checkpoint", required=True, help="a .pt/.pth/.tar checkpoint")
    ex.add_argument("--arch", default="mobilenetv2_tsm", help="network architecture (mobilenetv2_tsm)")
    ex.add_argument("--labels", help="label preset (jester) or a text file, one label per line")
    ex.add_argument("--size", type=int, help="input size (default: the checkpoint's, 224 for reference ones)")
    ex.add_argument("--name", help="bundle name (default: the output folder's name)")
    ex.add_argument("--out", required=True, help="bundle folder to write")
    ex.set_defaults(func="cmd_export")

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
    co.set_defaults(func="cmd_calibrate_collect")

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
    qz.add_argument("--types", choices=["u8s8", "u8u8", "s8s8"], default="u8s8",
                    help="activation and weight integer types (default u8s8)")
    qz.add_argument("--reduce-range", action="store_true",
                    help="7-bit weights: avoids the u8 x s8 saturation of x86 CPUs without VNNI (AVX2)")
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
    qz.set_defaults(func="cmd_quantize")

    rn = sub.add_parser("run", help="the daemon (foreground); --demo: the embedded model on a generated clip")
    rn.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    rn.add_argument("--demo", action="store_true", help="classify a generated clip and print the events")
    _engine_args(rn)
    rn.set_defaults(func="cmd_run")

    ck = sub.add_parser("check", help="validate the config, load the model, open cameras and sinks; "
                                      "exit 0 only if run would start")
    ck.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    ck.add_argument("--no-int8-check", dest="int8_check", action="store_false",
                    help="skip the INT8 self-check (FP32 vs INT8 on this CPU, a few seconds; run when the engine "
                         "runs INT8)")
    ck.set_defaults(func="cmd_check")

    stt = sub.add_parser("status", help="how the running daemon does: cameras, inference, events, sink backlogs")
    stt.add_argument("--config", default=DEFAULT_CONFIG, help=f"the daemon's config (default {DEFAULT_CONFIG})")
    stt.add_argument("--state-dir", help="read the status from this state directory instead")
    stt.add_argument("--json", action="store_true", help="one JSON object")
    stt.add_argument("--prometheus", action="store_true", help="Prometheus exposition text")
    stt.set_defaults(func="cmd_status")

    inst = sub.add_parser("install-service", help="write the systemd unit (for this environment), its drop-ins "
                                                  "and a default config")
    inst.add_argument("--config", default=DEFAULT_CONFIG, help=f"config the service runs (default {DEFAULT_CONFIG}); "
                                                               "a default one is written if missing")
    inst.add_argument("--user", help="run as this existing user instead of a dynamic one")
    inst.add_argument("--dry-run", action="store_true", help="print what would be written")
    inst.add_argument("--root", default="/", help="write under this root (building an image)")
    inst.add_argument("--jetson", action="store_true", help="add the Jetson drop-in and udev rule (auto-detected)")
    inst.add_argument("--network", action="store_true", help="allow network (auto when the config has an mqtt sink)")
    inst.set_defaults(func="cmd_install_service")

    dv = sub.add_parser("devices", help="cameras, serial ports, GPIO chips, accelerators and engines on this machine")
    dv.add_argument("--json", action="store_true", help="print one JSON object")
    dv.add_argument("--root", default="/", help="look under this root instead (a mounted image); opens no device")
    dv.set_defaults(func="cmd_devices")

    cf = sub.add_parser("config", help="--schema: the config's JSON schema; otherwise the validated config "
                                       "with every default filled in")
    cf.add_argument("--schema", action="store_true", help="print the JSON schema")
    cf.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    cf.set_defaults(func="cmd_config")

    cl = sub.add_parser("classify", help="events (JSON lines) from a video file")
    cl.add_argument("video", help="a video file OpenCV can decode (mp4v, MJPG, ...)")
    _engine_args(cl)
    cl.add_argument("--threads", type=int, help="engine threads (default: the engine's choice)")
    cl.add_argument("--camera", help="camera name in the events (default: the file's name)")
    cl.add_argument("--per-frame", metavar="CSV",
                    help="write per-frame probabilities (frame, time, one column per label)")
    cl.set_defaults(func="cmd_classify")

    ee = sub.add_parser("eval-events", help="precision, recall and latency of the events on annotated recordings",
                        description="Runs recordings through the model and the event detector (the settings of "
                                    "--config's events section, or the model's defaults) and matches the events to "
                                    "start,end,label rows (as for 'dataset from-recording'; background labels such "
                                    "as no_motion are not targets). Several recordings: each one's figures, then "
                                    "all of them pooled.")
    ee.add_argument("video", nargs="+", help="the recordings (video files OpenCV can decode)")
    ee.add_argument("--annotations", metavar="CSV", help="start,end,label rows (seconds, MM:SS.fff or HH:MM:SS.fff) "
                                                         "of one recording (default: beside each recording, its name "
                                                         "with .csv)")
    ee.add_argument("--config", help="a daemon config: its events section (and its model unless --model)")
    _engine_args(ee)
    ee.add_argument("--threads", type=int, help="engine threads (default: the engine's choice)")
    ee.add_argument("--tolerance", type=float, default=0.5, metavar="S",
                    help="an event may start or end this many seconds outside its segment (default 0.5)")
    ee.add_argument("--json", action="store_true", help="print one JSON object")
    ee.set_defaults(func="cmd_eval_events", model=None)  # --model: default the config's, else 'default'

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
    bn.set_defaults(func="cmd_bench")

    ev = sub.add_parser("eval", help="accuracy, macro-F1, confusion of a bundle on a dataset (runtime engines)")
    ev.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    ev.add_argument("--data", required=True, help="dataset ROOT/<label>/*.mp4")
    ev.add_argument("--split", help="use ROOT/<split>.txt")
    ev.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino")
    ev.add_argument("--device", default="CPU", help="engine device (CPU, GPU, NPU, AUTO, cuda, tensorrt)")
    ev.add_argument("--precision", choices=["fp32", "int8"], help="graph to run (default: the bundle's)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--plot", help="write the confusion matrix as a PNG")
    ev.set_defaults(func="cmd_eval")

    so = sub.add_parser("studio", help="the local web app: review field clips, label, teach, evaluate, watch live "
                                       "(needs [studio])",
                        description="Serves one page at the printed URL (with its token). Binds 127.0.0.1 unless "
                                    "--host says otherwise; off loopback every request needs the token.")
    so.add_argument("--data", help="dataset ROOT/<label>/* (labelled clips are exported here; teach reads it)")
    so.add_argument("--spool", help="the daemon's field clips (clips.dir): the review queue")
    so.add_argument("--recordings", help="folder of recordings; segments of X.avi are saved in X.csv beside it")
    so.add_argument("--model", help="bundle for scores, live and teach's base (default: the config's, else default)")
    so.add_argument("--config", help="a daemon config: its events: settings (saved back from the live page), "
                                     "engine, model and cameras")
    so.add_argument("--work", help="the studio's own files: spool labels CSV, taught bundles (default DATA/.studio)")
    so.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    so.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: a free one, printed)")
    so.set_defaults(func="cmd_studio")

    te = sub.add_parser("teach", help="a new bundle from a handful of labelled clips, on the device (no torch)",
                        description="Exit codes: 64 an option out of its bounds, 65 bad clips or base bundle (a "
                                    "taught bundle too), 66 missing input, 69 no engine, 73 the output folder exists.")
    te.add_argument("--base", default="default", help="online bundle whose features are used (default: default)")
    te.add_argument("--data", required=True, help="clips ROOT/<label>/*.mp4 (ROOT/background/: optional negatives)")
    te.add_argument("--out", required=True, help="bundle folder to write (must not exist)")
    te.add_argument("--name", help="bundle name (default: the output folder's name)")
    te.add_argument("--engine", choices=["onnxruntime", "openvino"], help="default: the first installed")
    te.add_argument("--threads", type=int, help="engine threads (default: the engine's choice)")
    te.add_argument("--frames", type=int, default=1, help="frames the head sees at once: 1, the current frame's "
                                                          "features (default), or a window of N (docs/teach.md)")
    te.add_argument("--augment", type=int, default=1, help="augmented passes per clip (default 1)")
    te.add_argument("--no-cv", action="store_true", help="skip the cross-validation (faster; no figures)")
    te.add_argument("--seed", type=int, default=0)
    te.add_argument("--json", action="store_true", help="print the report as one JSON object")
    te.set_defaults(func="cmd_teach")
    return p


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="bundle folder or name (default: default)")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino (default: onnxruntime)")
    p.add_argument("--device", default="CPU", help="engine device (CPU, GPU, NPU, AUTO, cuda, tensorrt)")
    p.add_argument("--precision", choices=["fp32", "int8"], help="graph to run (default: the bundle's)")


