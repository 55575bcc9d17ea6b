"""Write what ``quantize`` did into the bundle: ``files.int8``, ``precision`` and the ``quantization`` block
of ``model.yaml``, and an INT8 section of ``CARD.md`` (replaced on each run, between markers)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import yaml

from edge.bundle import Bundle, load_bundle, validate_graph
from edge.calibration.quantize import INT8_FILE
from edge.errors import InputError
from edge.util import atomic_write

logger = logging.getLogger(__name__)

CARD_BEGIN = "<!-- quantization: written by edge-tsm quantize -->"
CARD_END = "<!-- /quantization -->"


def quantization_block(report: dict[str, Any], guard: dict[str, Any] | None, default: bool,
                       note: str) -> dict[str, Any]:
    """The ``quantization`` mapping of model.yaml: recipe, calibration set, checks, and the default decision."""
    block: dict[str, Any] = {"file": INT8_FILE, **report["recipe"], "calibration": report["calibration"],
                             "calibration_agreement": report["calibration_agreement"], "size_mb": report["mb"],
                             "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if guard is not None:
        from edge.bench import machine
        m = machine()  # INT8 kernels differ by CPU family (VNNI or not): the guard holds for the one it ran on
        block["guard"] = {"data": guard["data"], "split": guard["split"], "max_drop_points": guard["max_drop_points"],
                          "min_agreement": guard["min_agreement"], "passed": guard["passed"],
                          "cpu": m["cpu"], "arch": m["arch"], "isa": m["isa"],
                          "engines": {e: {k: r[k] for k in ("n", "agreement", "fp32", "int8", "drop_points")}
                                      for e, r in guard["engines"].items()}}
        if guard.get("selfcheck"):  # edge.int8check's sample on this machine: what check compares a device with
            block["guard"]["selfcheck"] = guard["selfcheck"]
    block["default"] = default
    block["note"] = note
    return block


def record_quantization(bundle: Bundle, block: dict[str, Any]) -> Bundle:
    """Rewrite model.yaml with ``files.int8``, ``precision`` and ``quantization``; update CARD.md; reload.

    Raises:
        InputError: model.yaml or CARD.md cannot be read or written.
        ModelError: the result does not load (it is checked against both graphs).
    """
    path = bundle.yaml_path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"model.yaml {path}: cannot read ({' '.join(str(e).split())})") from None
    raw["files"] = {**(raw.get("files") or {}), "int8": INT8_FILE}
    raw["precision"] = "int8" if block["default"] else "fp32"
    raw["quantization"] = block
    try:
        atomic_write(path, yaml.safe_dump(raw, sort_keys=False, width=120), mode=0o644)
    except OSError as e:
        raise InputError(f"model.yaml {path}: cannot write ({e})") from None
    _update_card(bundle, block)
    loaded = load_bundle(bundle.root)  # validates the default precision's graph
    validate_graph(loaded, "int8")
    return loaded


def card_section(block: dict[str, Any]) -> str:
    """Markdown: how the INT8 graph was made and how it compares with FP32."""
    cal = block["calibration"]
    src = cal.get("kind", "?") + (f", seed {cal['seed']}, generator v{cal['generator']}" if "seed" in cal else "") + (
        f", {cal['videos']} recordings" if "videos" in cal else "")
    lines = [CARD_BEGIN, "## INT8 (`model.int8.onnx`)", "",
             f"- QDQ graph by ONNX Runtime {block['versions']['onnxruntime']}: activations {block['activations']}, "
             f"weights {block['weights']}; calibration `{block['method']}` on {cal['frames']} frames in "
             f"{cal['segments']} sequences ({src}), each frame with the states its sequence produced.",
             f"- Size {block['size_mb']['int8']} MB (FP32 {block['size_mb']['fp32']} MB); top-1 agreement with FP32 on "
             f"the calibration frames {block['calibration_agreement']['top1_agreement']:.4f}."]
    g = block.get("guard")
    if g:
        cpu = f" Measured on {g['cpu']} ({g.get('arch', '?')}; {', '.join(g['isa']) or 'no vector ISA listed'})." \
            if "cpu" in g else ""
        lines += ["", f"Held out: `{g['data']}`, clip = argmax of the mean softmax, through the runtime engines.{cpu}",
                  "",
                  "| engine | clips | top-1 agreement | accuracy FP32 | accuracy INT8 | drop (points) | macro-F1 FP32 "
                  "| macro-F1 INT8 |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {e} | {r['n']} | {r['agreement']:.4f} | {r['fp32']['accuracy']:.4f} "
                  f"| {r['int8']['accuracy']:.4f} | {r['drop_points']:.2f} | {r['fp32']['macro_f1']:.4f} "
                  f"| {r['int8']['macro_f1']:.4f} |"
                  for e, r in g["engines"].items()]
        sc = g.get("selfcheck")
        if sc:
            tv = ", ".join(f"{e} {r['mean_tv']:.4f}" for e, r in sc["engines"].items())
            lines += ["", "INT8 self-check reference (`edge-tsm check` holds a device to 1.5 times these): mean "
                      f"FP32-INT8 probability distance per frame on {sc['per_class']} rendered clips per class "
                      f"(generator {sc['generator']}, seed {sc['seed']}): {tv}."]
    lines += ["", f"Default precision: **{'int8' if block['default'] else 'fp32'}**. {block['note']}", CARD_END]
    return "\n".join(lines) + "\n"


def _update_card(bundle: Bundle, block: dict[str, Any]) -> None:
    path = bundle.root / "CARD.md"
    if not path.is_file():
        return
    try:
        text = path.read_text(encoding="utf-8")
        section = card_section(block)
        if CARD_BEGIN in text and CARD_END in text:
            head, rest = text.split(CARD_BEGIN, 1)
            text = head + section.rstrip("\n") + rest.split(CARD_END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"card {path}: cannot update ({e})") from None
