"""The docs test: every command in a README.md or docs/*.md code block runs here, or is in SKIPPED.

Commands are read by tests/docblocks.py (shell blocks; bare blocks' lines that start like a command;
``a && b`` is two commands). Each one is either

* run by one of the tests below, declared with ``@runs(...)`` and executed by ``Shell.run`` as a
  user types it: through ``bash -c`` in a fresh folder, with ``edge-tsm`` and ``python`` on PATH
  (``edge-tsm`` is ``python -m edge``), exit 0 required, and its output checked against what the doc
  says it prints; only a placeholder that needs a real value is replaced, each one listed in
  PLACEHOLDERS with why; or
* listed in SKIPPED (the one place) with the reason it cannot run here.

A new command in a doc that is neither fails ``test_every_doc_command_is_run_or_skipped``; a command
removed from the docs but still listed here fails it too. The config snippets (``yaml`` blocks) are
validated against the config's schema, the bundle.md keys against the bundle model, and the event
example against a real event.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from docblocks import ROOT, blocks_of, code_blocks, commands_of, doc_commands

# --- what is not run here, and why (the ONE list) -------------------------------------------------------
ROOT_ONLY = "needs root on the device (writes /etc, /opt or /var, or changes groups)"
SYSTEMD = "needs systemd as PID 1 and root (tests/test_service.py checks the unit with systemd-analyze)"
INSTALL = "installs packages from the network into the environment (.ci/run does this install before the tests)"
JETSON = "Jetson only (a JetPack wheel, or removing the venv's OpenCV for JetPack's)"
BENCH_224 = "the full bench on the 224x224 export: minutes (tests/test_bench.py runs the --tiny form)"
HELDOUT = ("the default model's held-out split, 540 clips: rendering it and two evaluations take minutes; the same "
           "verbs run on the loop's field-test")
SKIPPED: dict[str, str] = {
    'pip install ".[onnxruntime]"': INSTALL,
    'pip install -e ".[onnxruntime,openvino,train,dev]"': INSTALL,
    "bash tests/run_each.sh": "the test suite itself (this file is part of it)",
    "sudo edge-tsm install-service": ROOT_ONLY + "; tests/test_service.py runs it under --root",
    "sudo systemctl enable --now edge-tsm": SYSTEMD,
    'pip install -e ".[onnxruntime,openvino,train]"': INSTALL,
    "edge-tsm train --recipe default --out runs/default --ablation":
        "about 6.5 hours of training on a 2-core CPU (tests/test_train.py trains tiny models)",
    "edge-tsm train --recipe v2 --init models/default --out runs/v2":
        "about 5 h of training on a 2-core CPU (tests/test_train.py trains a recipe built on another in miniature)",
    "edge-tsm dataset synth --out data/synth-test-s1 --per-class 60 --seed 1 --generator 4": HELDOUT,
    "edge-tsm dataset synth-recording --out rec/r41.avi --annotations rec/r41.csv --segments 40 --seed 41":
        "a 127 s recording of 40 motions, one of eight (tests/test_synth_recording.py renders short ones)",
    "edge-tsm eval-events rec/r4?.avi --model runs/v2 --precision int8":
        "needs the recipe's bundle (hours); tests/test_evalevents.py pools several recordings on the tiny model",
    "edge-tsm dataset synth --out data/synth5-train-s0 --per-class 700 --seed 0":
        "6300 clips: minutes of rendering (tests/test_synth_v5.py renders every class; the dataset doc's teach set "
        "runs below)",
    "python -m edge.data.synthbench": "a benchmark: about a minute on 2 cores (tests/test_synth_v5.py runs it with "
                                      "--clips 1 --rounds 1)",
    "edge-tsm eval --model default --data data/synth-test-s1": HELDOUT,
    "edge-tsm eval --model ft --data data/synth-test-s1": HELDOUT,
    "edge-tsm train --data field --init default --out runs/field-1 --epochs 4 --batch 8 --optimizer adamw "
    "--lr 0.0003 --weight-decay 0.01":
        "the loop's fine-tune with more epochs: minutes of CPU; the loop's own train command runs "
        "(test_the_field_loop_as_documented)",
    "sudo groupadd -f -r gpio": ROOT_ONLY,
    'sudo usermod -aG video,dialout,gpio,render "$USER"': ROOT_ONLY,
    "sudo apt install python3-venv python3-pip": ROOT_ONLY + "; " + INSTALL,
    "python3 -m venv --system-site-packages /opt/edge-tsm": JETSON + "; " + ROOT_ONLY,
    ". /opt/edge-tsm/bin/activate": "the device's venv in /opt (" + ROOT_ONLY + ")",
    "pip install /path/to/onnxruntime_gpu-*.whl": JETSON,
    "pip install /path/to/edge-tsm": INSTALL,
    "pip uninstall -y opencv-python-headless": JETSON + " (it would remove this environment's OpenCV)",
    "sudo apt install python3-venv": ROOT_ONLY + "; " + INSTALL,
    "python3 -m venv /opt/edge-tsm": ROOT_ONLY,
    'pip install "/path/to/edge-tsm[openvino,onnxruntime]"': INSTALL,
    "pip install -U /path/to/edge-tsm": INSTALL,
    "sudo systemctl restart edge-tsm": SYSTEMD,
    "sudo systemctl disable --now edge-tsm": SYSTEMD,
    "sudo rm -rf /etc/systemd/system/edge-tsm.service /etc/systemd/system/edge-tsm.service.d": ROOT_ONLY,
    "sudo rm -f /etc/udev/rules.d/99-edge-tsm-gpio.rules": ROOT_ONLY,
    "sudo udevadm control --reload": ROOT_ONLY + " (udev)",
    "sudo systemctl daemon-reload": SYSTEMD,
    "sudo rm -rf /opt/edge-tsm": ROOT_ONLY,
    "sudo rm -rf /etc/edge-tsm": ROOT_ONLY,
    "sudo rm -rf /var/lib/edge-tsm /var/lib/private/edge-tsm /var/cache/edge-tsm /var/cache/private/edge-tsm":
        ROOT_ONLY,
    "edge-tsm bench": "the full bench: several minutes (tests/test_bench.py runs the --tiny form)",
    "edge-tsm export --checkpoint \"$(python -c 'import edge.models, pathlib; print(pathlib.Path(edge.models."
    "__file__).parent / \"default/weights.pt\")')\" --size 224 --out /tmp/d224 --name default-224":
        "needs the train extra and writes /tmp/d224 for the full 224x224 bench runs below (minutes); "
        "tests/test_train.py exports checkpoints",
    "edge-tsm bench --model /tmp/d224 --int8-from-calib synth --json > bench-224.json": BENCH_224,
    "edge-tsm bench --model /tmp/d224 --int8-from-calib synth --threads 1": BENCH_224,
    "edge-tsm bench --model /tmp/d224 --int8-from-calib synth --model-rate": BENCH_224,
    "edge-tsm bench --model /tmp/d224 --int8-from-calib synth --max-batch 1 --decode-scale 1": BENCH_224,
    "edge-tsm bench --tiny --model DIR": "tests/test_bench.py runs it (with --json) on the tiny bundle with an INT8 "
                                         "graph and checks its figures; here it would take another 15 s",
    "edge-tsm studio --data field --spool /var/lib/edge-tsm/clips --recordings recordings --config "
    "/etc/edge-tsm/config.yaml": "a web server that runs until stopped, on the device's folders; "
                                 "tests/test_studio_browser.py starts it the same way and drives the page in Chromium",
    "sudo systemctl reload edge-tsm": SYSTEMD + " (tests/test_daemon.py sends the SIGHUP it sends)",
    "torchrun --standalone --nproc_per_node 2 -m edge train --data D --out M --batch 16":
        "two training processes on a real dataset (minutes); tests/test_train_dist.py runs this torchrun form on a "
        "tiny dataset and checks the bundle, train.json and the weights against one process",
    "torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 --rdzv-id run1 -m edge "
    "train --data D --out M --batch 256 --lr 0.08": "needs two machines with 8 GPUs each",
}

# docs/teach.md's measurement and README's teach example (issue 17)
TEACH = ("the measurement of docs/teach.md: rendering the sets and recordings, teaching and evaluating take minutes on "
         "2 cores; tests/test_teach.py teaches tiny sets, checks the graphs on both engines and runs a taught bundle "
         "through the pipeline")
_TEACH_SET = "--classes swipe_up_left,swipe_up_right,swipe_down_left,swipe_down_right,shake,wave"
SKIPPED.update({
    "edge-tsm teach --base default --data clips --out mymotions":
        "needs a folder of your clips (clips/<label>/*); tests/test_teach.py runs teach the same way on generated ones",
    f"edge-tsm dataset synth --out teach-10 {_TEACH_SET} --per-class 10 --seed 0 --size 112x112 --frames 22": TEACH,
    f"edge-tsm dataset synth --out teach-heldout {_TEACH_SET} --per-class 20 --seed 1 --size 112x112 --frames 22":
        TEACH,
    "edge-tsm teach --data teach-10 --out taught-10": TEACH,
    "edge-tsm eval --model taught-10 --data teach-heldout": TEACH,
    "edge-tsm train --data teach-10 --out scratch-10 --epochs 4 --batch 8 --threads 2": TEACH + " (and torch)",
    "edge-tsm eval --model scratch-10 --data teach-heldout": TEACH,
    "edge-tsm dataset synth-recording --out other.avi --annotations other.csv --segments 24 --seed 21": TEACH,
    "python -m edge.teach.measure background other.avi --out other-bg.csv": TEACH,
    "edge-tsm eval-events other.avi --annotations other-bg.csv --model taught-10": TEACH,
    "edge-tsm dataset synth-recording --out unseen.avi --annotations unseen.csv --segments 24 --seed 22 --classes "
    "approach_and_leave,tilt_left,tilt_right": TEACH,
    "python -m edge.teach.measure background unseen.avi --out unseen-bg.csv": TEACH,
    "edge-tsm eval-events unseen.avi --annotations unseen-bg.csv --model taught-10": TEACH,
    "python -m edge.teach.measure still --out still.avi --annotations still.csv --seconds 60": TEACH,
    "edge-tsm eval-events still.avi --annotations still.csv --model taught-10": TEACH,
})

# --- placeholders: a doc's stand-in name -> (what the test puts there, why) ----------------------------------
PLACEHOLDERS: dict[str, tuple[str, str]] = {
    "/etc/edge-tsm/config.yaml": ("config.yaml", "the device's config: here one with a file camera (there is no "
                                                 "/dev/video0 here) and a log sink, model default"),
    "spool": ("state/clips", "the spool copied off the device: here the loop's own state/clips"),
    "shift-3.mp4": ("rec.avi", "a long annotated recording: the loop's generated rec.avi"),
    "shift-3.csv": ("rec.csv", "its start,end,label rows: the loop's rec.csv"),
    "recordings/": ("rec.avi", "recordings of the deployment camera: the loop's rec.avi"),
    "runs/field-1": ("ft", "the fine-tuned bundle: the loop's train writes it as ft"),
    "mybundle": ("ft", "a bundle of yours (README's INT8 block): the loop's fine-tuned ft"),
    "calib/": ("calib", "the calibration folder: the same name without the slash, as the loop writes it"),
    "heldout/": ("field-test", "a held-out dataset: the loop's field-test"),
    "--segments 40": ("--segments 4", "the smaller recording the doc gives for a quick run of the loop"),
}
# python -m edge.bench.int8 times 8 variants x 30 rounds x 20 steps: 30 s on the loop's 112x112 model, so
# its bundle is the tiny one (with an INT8 graph) there.
TINY_BUNDLE = ("mybundle", "tiny")

RUN_BY: dict[str, str] = {}  # doc command -> the test that runs it (filled by @runs at import)


def runs(*commands: str):
    """Declare the doc commands a test runs (each must then run, or be covered, before it ends)."""
    def mark(fn):
        for c in commands:
            assert c not in RUN_BY, f"{c!r} is declared by both {RUN_BY[c]} and {fn.__name__}"
            RUN_BY[c] = fn.__name__
        fn.doc_commands = commands
        return fn
    return mark


# --- running commands as a user does -----------------------------------------------------------------------
class Shell:
    """Runs doc commands with bash in ``cwd``, ``edge-tsm`` and ``python`` on PATH; keeps what ran."""

    def __init__(self, cwd: Path, bindir: Path, declared: tuple[str, ...]) -> None:
        self.cwd, self.bindir, self.declared = cwd, bindir, declared
        self.ran: dict[str, str] = {}   # substituted command -> the doc command
        self.done: set[str] = set()      # doc commands run or covered
        self.seconds: dict[str, float] = {}
        self.docs = doc_commands()

    def substitute(self, doc_cmd: str, subs: tuple[str | tuple[str, str], ...]) -> str:
        text = doc_cmd
        for s in subs:
            old, new = (s, PLACEHOLDERS[s][0]) if isinstance(s, str) else s
            pattern = r"(?<![\w/.-])" + re.escape(old) + r"(?![\w/.-])"
            assert re.search(pattern, text), f"placeholder {old!r} is not in {doc_cmd!r}"
            text = re.sub(pattern, new, text)
        return text

    def _check(self, doc_cmd: str) -> None:
        assert doc_cmd in self.docs, f"{doc_cmd!r} is in no doc any more: update the test"
        assert doc_cmd in self.declared, f"{doc_cmd!r} is run but not declared in this test's @runs"

    def run(self, doc_cmd: str, *subs: str | tuple[str, str], timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``doc_cmd`` (the doc's text) with ``subs`` applied; exit 0 required."""
        self._check(doc_cmd)
        cmd = self.substitute(doc_cmd, subs)
        full_env = {**os.environ, "PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                    **(env or {})}
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", cmd], cwd=self.cwd, env=full_env, capture_output=True, text=True,
                           timeout=timeout)
        self.seconds[cmd] = round(time.monotonic() - t0, 2)  # shown with pytest -s: where the time goes
        print(f"{self.seconds[cmd]:6.2f} s  {cmd}")
        assert p.returncode == 0, (f"`{cmd}` (doc: `{doc_cmd}`, {', '.join(self.docs[doc_cmd])}) exited "
                                   f"{p.returncode}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-3000:]}")
        self.ran[cmd] = doc_cmd
        self.done.add(doc_cmd)
        return p

    def same(self, doc_cmd: str, *subs: str | tuple[str, str]) -> None:
        """``doc_cmd`` with ``subs`` is exactly a command this test already ran: it counts as run."""
        self._check(doc_cmd)
        cmd = self.substitute(doc_cmd, subs)
        assert cmd in self.ran, f"{doc_cmd!r} -> {cmd!r} is none of the commands run: {sorted(self.ran)}"
        self.done.add(doc_cmd)

    def finish(self) -> None:
        missing = [c for c in self.declared if c not in self.done]
        assert not missing, f"declared in @runs but not run: {missing}"


@pytest.fixture(scope="session")
def bindir(tmp_path_factory) -> Path:
    """``edge-tsm`` (python -m edge) and ``python``/``python3`` (this interpreter) for the commands' PATH."""
    d = tmp_path_factory.mktemp("bin")
    py = f'exec "{sys.executable}"'
    for name, line in (("edge-tsm", py + ' -m edge "$@"'), ("python", py + ' "$@"'), ("python3", py + ' "$@"')):
        (d / name).write_text(f"#!/bin/sh\n{line}\n")
        (d / name).chmod(0o755)
    return d


@pytest.fixture
def sh(request, tmp_path, bindir) -> Shell:
    return Shell(tmp_path, bindir, getattr(request.function, "doc_commands", ()))


def json_lines(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def doc_block(name: str, info: str) -> str:
    """The body of the ``info`` block whose first line names ``name`` (``# field.yaml``, a docstring...)."""
    for b in blocks_of(info):
        if b.lines and name in b.lines[0]:
            return "\n".join(b.lines) + "\n"
    raise AssertionError(f"no {info} block starting with {name!r} in the docs")


# --- the registry: complete, and nothing stale -----------------------------------------------------------------
def unhandled(docs: dict[str, list[str]]) -> dict[str, list[str]]:
    return {c: w for c, w in docs.items() if c not in RUN_BY and c not in SKIPPED}


def test_every_doc_command_is_run_or_skipped():
    docs = doc_commands()
    neither = unhandled(docs)
    assert not neither, "not run and not listed as skipped (tests/test_docs.py): " + "; ".join(
        f"{c!r} ({', '.join(w)})" for c, w in neither.items())
    both = sorted(set(RUN_BY) & set(SKIPPED))
    assert not both, f"both run and skipped: {both}"
    stale = sorted(c for c in [*RUN_BY, *SKIPPED] if c not in docs)
    assert not stale, f"listed in tests/test_docs.py but in no doc any more: {stale}"
    assert all(reason.strip() for reason in SKIPPED.values())
    assert all(why for _, why in PLACEHOLDERS.values())


def test_a_command_added_to_a_doc_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    for f in ["README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]:
        (tmp_path / f).write_text((ROOT / f).read_text(encoding="utf-8"), encoding="utf-8")
    with open(tmp_path / "docs" / "install.md", "a", encoding="utf-8") as f:
        f.write("\n```sh\nedge-tsm check --config /etc/edge-tsm/config.yaml --strict   # new\n```\n")
    assert unhandled(doc_commands(tmp_path)) == {
        "edge-tsm check --config /etc/edge-tsm/config.yaml --strict": ["install.md:" + str(
            len((ROOT / "docs" / "install.md").read_text(encoding="utf-8").splitlines()) + 3)]}


def test_the_reader_finds_commands_as_a_user_reads_them(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("\n".join([
        "```sh", "# a comment", "edge-tsm a --x 1   # why", "pip install 'a[b]' && edge-tsm b ; edge-tsm c",
        "edge-tsm d \\", "    --long", 'python -c "import x; print(1)" | grep -E "a|b"', "```",
        "  ```bash", "  edge-tsm indented", "  ```",
        "```console", "$ edge-tsm e", "output line", "```",
        "```", " daemon ──> spool", "edge-tsm f", "```",
        "```yaml", "edge-tsm: not a command", "```", ""]))
    cmds = [c for b in code_blocks(md) for c in commands_of(b)]
    assert cmds == ["edge-tsm a --x 1", "pip install 'a[b]'", "edge-tsm b", "edge-tsm c", "edge-tsm d --long",
                    'python -c "import x; print(1)" | grep -E "a|b"', "edge-tsm indented", "edge-tsm e",
                    "edge-tsm f"]


# --- README: the first command, the device commands ------------------------------------------------------------
@runs("edge-tsm run --demo")
def test_the_demo_prints_events(sh):
    p = sh.run("edge-tsm run --demo")
    events = json_lines(p.stdout)  # README: "classify a generated clip ... and print the events"
    assert events and {e["event"] for e in events} == {"start", "end"}, p.stdout
    assert {"v", "event", "id", "camera", "label", "score", "ts", "start_ts", "frames", "seq"} <= set(events[0])
    summary = re.search(r"demo: (\d+) motions shown, (\d+) events started, (\d+) of the motions recognised", p.stderr)
    assert summary and int(summary[3]) >= 1, p.stderr
    sh.finish()


def _file_camera_config(folder: Path) -> Path:
    """PLACEHOLDERS['/etc/edge-tsm/config.yaml']: the device config, with a generated clip as the camera."""
    from edge.demo import make_demo_clip
    make_demo_clip(folder / "door.avi")
    cfg = {"model": "default", "cameras": [{"name": "door", "source": "door.avi"}],
           "sinks": [{"type": "log", "path": "events.jsonl"}], "state_dir": "state"}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return folder / "config.yaml"


@runs("edge-tsm devices", "edge-tsm devices --json", "edge-tsm check --config /etc/edge-tsm/config.yaml")
def test_the_device_commands(sh):
    text = sh.run("edge-tsm devices").stdout
    # README: "cameras, serial ports, GPIO chips, engines and their devices"; install.md: a machine with
    # none of these says "none found" in each section.
    for section in ("cameras:", "serial ports:", "GPIO chips:"):
        assert section in text, text
        after = text.split(section, 1)[1].splitlines()[1]
        assert after.strip() == "none found" or after.startswith("  "), text
    assert re.search(r"^ONNX Runtime [\d.]+: providers .*CPUExecutionProvider", text, re.M), text
    assert re.search(r"^OpenVINO \S+: devices CPU \(", text, re.M), text  # "OpenVINO ...: devices CPU (...)"
    survey = json.loads(sh.run("edge-tsm devices --json").stdout)
    assert {"machine", "cameras", "serial", "gpio", "onnxruntime", "openvino"} <= set(survey)
    _file_camera_config(sh.cwd)
    out = sh.run("edge-tsm check --config /etc/edge-tsm/config.yaml", "/etc/edge-tsm/config.yaml").stdout
    assert re.match(r"config\.yaml: ok: model default, 1 camera\(s\) \(door\), 1 sink\(s\), ready in [\d.]+ s",
                    out), out
    assert out.rstrip().endswith("; INT8 self-check passed"), out  # README's INT8 section: the default holds here
    sh.finish()


ORT_CHECK = 'python -c "import onnxruntime as ort; print(ort.__version__, ort.get_available_providers())"'
CV2_CHECK = ('python -c "import cv2; print(cv2.__file__); print(cv2.getBuildInformation())" | '
             'grep -E "dist-packages|GStreamer"')


@runs(ORT_CHECK, CV2_CHECK)
def test_the_jetson_checks_run_anywhere(sh):
    out = sh.run(ORT_CHECK).stdout
    assert re.match(r"[\d.]+ \[.*'CPUExecutionProvider'\]", out), out  # on a Jetson TensorRT and CUDA come first
    out = sh.run(CV2_CHECK).stdout
    assert re.search(r"GStreamer:\s+(YES|NO)", out), out  # "GStreamer: YES" on JetPack's OpenCV
    sh.finish()


# --- README's INT8 block: the step bench (calibrate and quantize run in the field loop below) ------------------
@runs("python -m edge.bench.int8 --model mybundle --threads 1,2")
def test_the_int8_step_bench(sh):
    from tinymodel import add_int8_graph, build_tiny_bundle
    add_int8_graph(build_tiny_bundle(sh.cwd / "tiny"))
    table = sh.run("python -m edge.bench.int8 --model mybundle --threads 1,2", TINY_BUNDLE).stdout
    rows = re.findall(r"^(onnxruntime|openvino)\s+([12])\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", table, re.M)
    # "per-frame step, side by side": FP32 and INT8 per engine and thread count
    assert {(e, t) for e, t, *_ in rows} == {(e, t) for e in ("onnxruntime", "openvino") for t in "12"}, table
    sh.finish()


# --- docs/field-loop.md: the loop run once, at the doc's quick size ----------------------------------------------
LOOP = (
    "edge-tsm dataset synth-recording --out rec.avi --annotations rec.csv --segments 40 --seed 11",
    "edge-tsm run --config field.yaml",
    "edge-tsm dataset from-clips --spool state/clips --sheet review.csv",
    "python label_from_truth.py state/clips review.csv rec.csv",
    "edge-tsm dataset from-clips --spool state/clips --labels review.csv --out field",
    "edge-tsm dataset from-recording rec.avi --annotations rec.csv --out field",
    "edge-tsm train --data field --init default --out ft --epochs 2 --batch 8 --optimizer adamw --lr 0.0003 "
    "--weight-decay 0.01 --threads 1 --name field-ft",
    "edge-tsm dataset synth-recording --out rec2.avi --annotations rec2.csv --segments 40 --seed 12",
    "edge-tsm dataset from-recording rec2.avi --annotations rec2.csv --out field-test",
    "edge-tsm eval --model default --data field-test",
    "edge-tsm eval --model default --data field-test --precision fp32",
    "edge-tsm eval --model ft --data field-test",
    "edge-tsm calibrate collect --from rec.avi --out calib --model ft",
    "edge-tsm quantize --model ft --calib calib --eval field-test",
    "edge-tsm run --config deploy.yaml",
)
# The same verbs as written in the doc's sections 2 and 3, with the doc's placeholder names: each is,
# once its placeholders are filled in, exactly one of the loop's commands above.
LOOP_GENERIC = (
    ("edge-tsm dataset from-clips --spool spool --sheet review.csv", ("spool",)),
    ("edge-tsm dataset from-clips --spool spool --labels review.csv --out field", ("spool",)),
    ("edge-tsm dataset from-recording shift-3.mp4 --annotations shift-3.csv --out field",
     ("shift-3.mp4", "shift-3.csv")),
    ("edge-tsm eval --model runs/field-1 --data field-test", ("runs/field-1",)),
    ("edge-tsm calibrate collect --from recordings/ --out calib --model runs/field-1", ("recordings/", "runs/field-1")),
    ("edge-tsm quantize --model runs/field-1 --calib calib --eval field-test", ("runs/field-1",)),
    # README's INT8 block, on the loop's recording, bundle and held-out clips
    ("edge-tsm calibrate collect --from recordings/ --out calib/ --model mybundle",
     ("recordings/", "calib/", "mybundle")),
    ("edge-tsm quantize --model mybundle --calib calib/ --eval heldout/", ("mybundle", "calib/", "heldout/")),
)


@runs(*LOOP, *(c for c, _ in LOOP_GENERIC))
def test_the_field_loop_as_documented(sh):
    pytest.importorskip("torch", reason="the loop's train needs the train extra (the README's test command has it)")
    seg = ("--segments 40",)
    (sh.cwd / "field.yaml").write_text(doc_block("# field.yaml", "yaml"), encoding="utf-8")
    (sh.cwd / "deploy.yaml").write_text(doc_block("# deploy.yaml", "yaml"), encoding="utf-8")
    (sh.cwd / "label_from_truth.py").write_text(doc_block("Stand-in for the human reviewer", "python"),
                                                encoding="utf-8")

    rec = json.loads(sh.run(LOOP[0], *seg).stdout)
    assert rec["rows"] >= 4 and (sh.cwd / "rec.csv").read_text().startswith("start,end,label\n")
    sh.run(LOOP[1])  # the daemon on the recording: ends with the file
    events = json_lines((sh.cwd / "state" / "events.jsonl").read_text())
    starts = [e for e in events if e["event"] == "start"]
    clips = sorted((sh.cwd / "state" / "clips").rglob("*.avi"))
    assert starts and len(clips) >= 1 and all(c.with_suffix(".json").is_file() for c in clips)
    assert any("-event-" in c.name for c in clips)  # the table: "N clips (M event, K uncertain)"

    assert json.loads(sh.run(LOOP[2]).stdout)["clips"] == len(clips)
    sheet = (sh.cwd / "review.csv").read_text().splitlines()
    assert sheet[0] == "clip,label,predicted,score,trigger,camera,start" and len(sheet) == len(clips) + 1
    said = sh.run(LOOP[3]).stdout  # the doc's reviewer script, as the doc prints it
    assert re.match(rf"{len(clips)} clips labelled; the model's label agreed: event \d+/\d+", said), said
    picked = json.loads(sh.run(LOOP[4]).stdout)
    assert picked["clips"] == len(clips) and (sh.cwd / "field" / "from-clips.json").is_file()
    cut = json.loads(sh.run(LOOP[5]).stdout)
    assert cut["clips"] == rec["rows"] and set(cut["per_label"]) <= set(yaml.safe_load(
        (ROOT / "models" / "default" / "model.yaml").read_text())["labels"])
    for doc_cmd, subs in LOOP_GENERIC[:3]:
        sh.same(doc_cmd, *subs)

    sh.run(LOOP[6], timeout=300)
    ft = yaml.safe_load((sh.cwd / "ft" / "model.yaml").read_text())
    assert ft["name"] == "field-ft" and ft["files"] == {"fp32": "model.onnx"}
    sh.run(LOOP[7], *seg)
    sh.run(LOOP[8])
    for cmd in LOOP[9:12]:  # "default 0.x accuracy (its FP32 graph 0.y), fine-tuned 0.z"
        assert re.search(r"^accuracy  [01]\.\d{4}$", sh.run(cmd).stdout, re.M)
    calib = json.loads(sh.run(LOOP[12]).stdout)
    assert calib["segments"] >= 1
    q = json.loads(sh.run(LOOP[13], timeout=300).stdout)  # "agreement ... on both engines, INT8 made the default"
    assert set(q["guard"]["engines"]) == {"onnxruntime", "openvino"} and q["default"] is q["guard"]["passed"]
    for doc_cmd, subs in LOOP_GENERIC[3:]:
        sh.same(doc_cmd, *subs)
    sh.run(LOOP[14])  # "deploy: runs, N events"
    assert json_lines((sh.cwd / "deploy-state" / "events.jsonl").read_text())
    sh.finish()


# --- docs/dataset.md: generator 5's teach set, a continuous recording, the photographs' sources ------------------
DATASET = ("edge-tsm dataset synth --out teach-motions --classes no_motion,extra --per-class 2 --seed 3",
           "edge-tsm dataset synth-recording --out scene.avi --annotations scene.csv --segments 4 --seed 21",
           'python -c "from edge.data.textures import sources_markdown; print(sources_markdown())"',
           "edge-tsm dataset synth --out with-recordings --per-class 2 --seed 24 --recordings 2 --recording-segments 3")


@runs(*DATASET)
def test_the_dataset_doc(sh):
    from edge.data.synth import EXTRA_CLASSES
    s = json.loads(sh.run(DATASET[0]).stdout)
    assert s["labels"] == ["no_motion", *EXTRA_CLASSES] and s["generator"] == 5 and s["clips"] == 20
    rec = json.loads(sh.run(DATASET[1]).stdout)
    assert rec["rows"] == 9 and (sh.cwd / "scene.csv").read_text().startswith("start,end,label\n")
    table = sh.run(DATASET[2]).stdout  # the doc's photo table, as the card gets it
    assert "| astronaut | skimage/data/astronaut.png | public domain |" in table or "not installed" in table
    s = json.loads(sh.run(DATASET[3]).stdout)
    assert s["recordings"] == 2 and s["clips"] == 18
    from edge.data.dataset import load_dataset
    ds = load_dataset(sh.cwd / "with-recordings")   # the recordings, annotated: seven rows (3 motions, 4 stills)
    assert len(ds.recordings) == 2 and all(len(r.spans) == 7 for r in ds.recordings)
    sh.finish()


# --- the docs' config snippets, model.yaml and event against the code --------------------------------------------
def test_every_config_snippet_is_a_valid_config():
    """Each yaml block is a config (or part of one: merged into a minimal config) or bundle.md's model.yaml."""
    from edge.config import Config, config_from_data
    base = {"model": "default", "cameras": [{"name": "door", "source": "door.avi"}]}
    seen = 0
    for b in blocks_of("yaml"):
        data = yaml.safe_load("\n".join(b.lines))
        assert isinstance(data, dict), f"{b.where}: a yaml block that is not a mapping"
        if b.path.name == "bundle.md":
            continue  # test_bundle_md_names_the_bundle_fields
        unknown = set(data) - set(Config.model_fields)
        assert not unknown, f"{b.where}: keys {sorted(unknown)} are not config keys"
        config_from_data({**base, **data}, b.where)
        seen += 1
    assert seen >= 8


def test_bundle_md_names_the_bundle_fields():
    """bundle.md's model.yaml: the typed sections name exactly the Bundle model's fields; the free-form
    ones (provenance, quantization) only keys the default model's model.yaml has."""
    from edge.bundle import Bundle, InputSpec, OutputSpec, StateSpec, TemporalSpec
    (block,) = [b for b in blocks_of("yaml") if b.path.name == "bundle.md"]
    doc = yaml.safe_load("\n".join(block.lines))
    for model, keys in ((Bundle, set(doc)), (InputSpec, set(doc["input"])), (OutputSpec, set(doc["output"])),
                        (StateSpec, set(doc["states"][0])), (TemporalSpec, set(doc["temporal"]))):
        assert keys == set(model.model_fields), f"bundle.md, {model.__name__}: {keys ^ set(model.model_fields)}"
    real = yaml.safe_load((ROOT / "models" / "default" / "model.yaml").read_text(encoding="utf-8"))

    def within(d: dict, r: dict, where: str) -> None:
        for k, v in d.items():
            assert k in r, f"bundle.md: {where}{k} is not in models/default/model.yaml"
            if isinstance(v, dict) and isinstance(r[k], dict) and k != "engines":
                within(v, r[k], f"{where}{k}.")
    within({k: doc[k] for k in ("provenance", "quantization")}, real, "")
    engine = doc["quantization"]["guard"]["engines"]["onnxruntime"]
    assert set(engine) - {"int8"} <= set(real["quantization"]["guard"]["engines"]["onnxruntime"])


def test_the_event_example_has_the_events_fields():
    from edge.events import Event
    (block,) = [b for b in blocks_of("json") if b.path.name == "README.md"]
    example = json.loads(block.lines[0])
    real = Event("start", "door-1", "door", "swipe_left", 0.93, 1.5, 1.2, 3).record(1)
    assert list(example) == list(real)
    assert {k: type(v) for k, v in example.items()} == {k: type(v) for k, v in real.items()}
