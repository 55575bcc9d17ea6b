"""A recipe's figures: ``model.yaml`` provenance, ``figures.json`` and ``CARD.md`` of the bundle it made.

Written by ``edge-tsm train --recipe`` after the held-out evaluation; ``edge-tsm quantize`` appends its INT8
section below the marker it owns. Every figure comes from ``results`` (the runtime engines' evaluations).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edge.models.loader import input_hw
from edge.models.recipe import RECIPES, count_macs, synth_generator
from edge.models.tsm import TSMNet

MEANING = {"no_motion": "static scene (flicker, noise, shake only)",
           "swipe_left": "an object moves towards smaller x", "swipe_right": "towards larger x",
           "swipe_up": "towards smaller y", "swipe_down": "towards larger y", "zoom_in": "the object grows",
           "zoom_out": "the object shrinks", "rotate_cw": "turns clockwise", "rotate_ccw": "turns counter-clockwise"}


def _optimizer_text(t: dict[str, Any]) -> str:
    return "AdamW" if t.get("optimizer") == "adamw" else "SGD with momentum 0.9 (Nesterov)"


def _summary(evals: dict[str, Any]) -> dict[str, Any]:
    return {eng: {"accuracy": round(r["accuracy"], 4), "macro_f1": round(r["macro_f1"], 4),
                  "direction_accuracy": round(r["direction_accuracy"], 4), "n": r["n"]} for eng, r in evals.items()}


def _set_command(spec: dict[str, Any]) -> str:
    return (f"edge-tsm dataset synth --seed {spec['seed']} --per-class {spec['per_class']} "
            f"--generator {synth_generator(spec['synth'])}")


def size_text(size: int | str) -> str:
    """A training input size as WIDTHxHEIGHT."""
    h, w = input_hw(size)
    return f"{w}x{h}"


def _stages_text(recipe: dict[str, Any], start: str) -> str:
    t = recipe["train"]
    stages = [t, *recipe.get("finetune", [])]
    sizes = [ft.get("size", t["size"]) for ft in stages]

    def at(i: int) -> str:  # the input size, said where the stages do not all train at one
        return f" at {size_text(sizes[i])}" if len(set(map(size_text, sizes))) > 1 else ""
    return (f"{t['epochs']} epochs{at(0)}, batch {t['batch']} clips of {t['frames']} frames taken every {t['stride']} "
            f"frames, {_optimizer_text(t)}, lr {t['lr']} with warm-up and cosine decay, weight decay "
            f"{t['weight_decay']}, label smoothing 0.1, one random crop / flip / colour jitter per clip (flips swap "
            f"the mirrored labels), seed {t['seed']}, {start}"
            + "".join(f"; then {ft['epochs']} more epochs{at(i)} from those weights at lr {ft['lr']} "
                      f"(seed {ft.get('seed', t['seed'])}){_fresh_text(ft)}{_balance_text(ft)}"
                      for i, ft in enumerate(stages[1:], 1))
            + ".")


def _balance_text(stage: dict[str, Any]) -> str:
    return (", exported balanced (`--balance`: minus the log of each label's rate in that data on its logit, so "
            "the graph scores the labels as if equally frequent; `prior_offsets` in model.yaml)"
            if stage.get("balance") else "")


def _fresh_text(stage: dict[str, Any]) -> str:
    """A stage trained on its own clips: which (the recipe's generator, another seed)."""
    ts = stage.get("train_set")
    if not ts:
        return ""
    mix = ts.get("mix")
    more = f" + `--seed {mix['seed']} --per-class {mix['per_class']} --generator {mix['generator']}`" if mix else ""
    rec = ts.get("recordings")
    if rec:
        own = f" of seed {rec['seed']}" if rec.get("seed", ts["seed"]) != ts["seed"] else ""
        own += f" with distractors {rec['distractors']:g}" if "distractors" in rec else ""
        more += (f", with `--recordings {rec['count']} --recording-segments {rec['segments']}`{own}: continuous "
                 "recordings whose windows are scored frame by frame")
    dis = f" --distractors {ts['distractors']:g}" if "distractors" in ts else ""
    return f" on fresh clips (`--seed {ts['seed']} --per-class {ts['per_class']}{dis}`{more})"


def _data_text(recipe: dict[str, Any]) -> str:
    s, tr = recipe["synth"], recipe["train_set"]
    text = (f"`edge-tsm dataset synth --seed {tr['seed']} --per-class {tr['per_class']} --generator "
            f"{synth_generator(s)}` ({s['size'][0]}x{s['size'][1]}, {s['frames']} frames at {s['fps']:g} fps)")
    mix = tr.get("mix")
    if mix:
        text += (f", with `--seed {mix['seed']} --per-class {mix['per_class']} --generator {mix['generator']}` "
                 "rendered into the same folders")
    return text + "."


def write_figures(bundle: Path, name: str, recipe: dict[str, Any], results: dict[str, Any], main_shift: str,
                  tests: list[tuple[Path, dict[str, Any]]], command: str) -> None:
    """Record ``results`` (per shift: bundle, train_seconds, eval of the main set, sets: every set's eval; and
    ``base``: the base recipe's bundle on the same sets) in the bundle's model.yaml, figures.json and CARD.md."""
    spec = yaml.safe_load((bundle / "model.yaml").read_text())
    net = TSMNet(len(spec["labels"]), width=spec["width"])
    macs = count_macs(net, spec["input"]["size"])
    params = sum(p.numel() for p in net.parameters())
    main = results[main_shift]["eval"]
    main_root = tests[0][0]
    prov = spec["provenance"]
    prov["generator"] = synth_generator(recipe["synth"])
    prov["heldout"] = {"data": str(main_root), "seed": recipe["test_set"]["seed"], "metrics": _summary(main)}
    if len(tests) > 1:
        prov["heldout_also"] = [{"data": str(root), "seed": s["seed"], "generator": synth_generator(s["synth"]),
                                 "metrics": _summary(results[main_shift]["sets"][str(root)])} for root, s in tests[1:]]
    prov["train_seconds"] = results[main_shift]["train_seconds"]
    abl = results.get("none") if main_shift != "none" else None
    if abl:
        prov["ablation_noshift"] = {eng: {k: v for k, v in m.items() if k != "n"}
                                    for eng, m in _summary(abl["eval"]).items()}
    base = results.get("base")
    if base:
        prov["base"] = {"recipe": base["recipe"], "bundle": base["bundle"],
                        "heldout": {str(root): _summary(ev) for root, ev in base["sets"].items()}}
    (bundle / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=120), encoding="utf-8")
    (bundle / "figures.json").write_text(json.dumps({"results": results, "macs": macs, "params": params},
                                                    indent=1, default=str), encoding="utf-8")
    onnx_mb = (bundle / "model.onnx").stat().st_size / 1e6
    first = next(iter(main.values()))
    lines = [
        f"# {spec['name']}: motion classifier (MobileNetV2-TSM, online)", "",
        "The embedded default model of edge-tsm. It tells nine kinds of motion apart, which a single frame "
        "cannot show: the classes differ only in how an object moves over time.", "",
        "## Classes", "", "| # | label | meaning (image coordinates, as displayed) |", "|---|---|---|",
    ]
    lines += [f"| {i} | {lab} | {MEANING.get(lab, '')} |" for i, lab in enumerate(spec["labels"])]
    lines += [
        "", "## Network", "",
        f"- MobileNetV2 width {spec['width']:g}, temporal shift of 1/8 of the channels in the 10 residual blocks, "
        f"**{spec['temporal']['shift']}** (online: 10 state tensors carried between frames).",
        f"- Input {spec['input']['size'][1]}x{spec['input']['size'][0]} RGB, ImageNet mean/std, "
        + ("the whole frame resized (stretched) to it." if spec["input"]["resize"] == "stretch"
           else "short side resized then centre crop.")
        + f" The graph sees one frame in {spec['temporal']['frame_stride']} at {spec['temporal']['fps']:g} fps.",
        f"- {params / 1e6:.2f} M parameters, {macs / 1e6:.1f} M multiply-accumulates per frame, "
        f"model.onnx {onnx_mb:.1f} MB (FP32).", "",
        "## Training", "",
        f"- Reproduce: `{command.replace(' --ablation', '')}` (about "
        f"{results[main_shift]['train_seconds'] / 60:.0f} min of training on a 2-core CPU, plus data generation and "
        "evaluation)" + ("; with `--ablation` it also trains the no-shift ablation into "
                         f"`{bundle}-noshift` (as long again)." if abl else "."),
    ]
    if recipe.get("base"):
        b = RECIPES[recipe["base"]]
        lines += [f"- Starts from the weights of recipe `{recipe['base']}` (the previous default; "
                  f"`edge-tsm train --recipe {recipe['base']}`, trained first unless `--init` gives its bundle): "
                  f"data {_data_text(b)} {_stages_text(b, 'from scratch (no pretrained weights)')}"]
    lines += [f"- Data: {_data_text(recipe)}",
              "- " + _stages_text(recipe, "from the base's weights" if recipe.get("base")
                                  else "from scratch (no pretrained weights)"), "",
              "## Held-out results", "",
              "Run through the exported bundle by the runtime engines (`edge-tsm eval`, FP32): clip prediction = "
              "argmax of the mean softmax over all the clip's frames.", ""]
    for root, s in tests:
        n = next(iter(results[main_shift]["sets"][str(root)].values()))["n"]
        lines += [f"`{_set_command(s)}` ({n} clips):", "",
                  "| model | engine | accuracy | macro-F1 | accuracy on the 8 direction classes |",
                  "|---|---|---|---|---|"]
        rows = [(f"TSM ({main_shift})", results[main_shift]["sets"][str(root)])]
        if abl:
            rows.append(("no shift (TSN-style ablation, same recipe)", abl["sets"][str(root)]))
        if base:
            rows.append((f"{base['recipe']} (the base, before this recipe)", base["sets"][str(root)]))
        for label, evals in rows:
            lines += [f"| {label} | {eng} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                      f"{r['direction_accuracy']:.4f} |" for eng, r in evals.items()]
        lines.append("")
    lines += [f"Per-class recall (TSM, {next(iter(main))}, `{_set_command(tests[0][1])}`):", ""]
    lines += [f"- {lab}: {first['per_class'][lab]['recall']:.3f}" for lab in spec["labels"]]
    lines += ["", "## Limits", "",
              "- Trained only on generated clips: generator "
              f"{synth_generator(recipe['synth'])} draws photographs, arms, distractors and slow motions, but real "
              "scenes still differ. Fine-tune or teach on clips from your camera (docs/field-loop.md, "
              "docs/teach.md).",
              f"- Expects about {spec['temporal']['fps']:g} fps; the runtime subsamples faster cameras.", ""]
    (bundle / "CARD.md").write_text("\n".join(lines), encoding="utf-8")
