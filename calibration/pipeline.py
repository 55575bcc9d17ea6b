"""The ``edge-tsm quantize`` verb end to end: quantize, check, decide the default precision, record, report.

``--recipe default`` reproduces the embedded model's INT8 file in one command: it renders the
calibration set (synth seed 2) and the held-out set (synth seed 1, as the training recipe does)
when they are missing, quantizes with the defaults, and applies the issue's bar (drop <= 0.5 point,
top-1 agreement >= 99 % on both engines) before making INT8 the default.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge.backends import available_engines
from edge.bundle import Bundle
from edge.calibration.calibset import MANIFEST, load_calibration_set
from edge.calibration.quantize import QuantizeOptions, copy_bundle, fp32_bundle, quantize_bundle
from edge.data.dataset import load_dataset
from edge.errors import DeviceError, UsageError

logger = logging.getLogger(__name__)

RECIPES: dict[str, dict[str, Any]] = {
    "default": {
        "calib": {"dir": {4: "calib-synth-s2", 5: "calib-synth-s2-g5"}, "seed": 2, "per_class": 8},
        # = models/recipe.py's test sets: the held-out split of the generator the bundle was trained on
        "eval": {"dir": {4: "synth-test-s1", 5: "synth-g5-test-s1"}, "seed": 1, "per_class": 60},
        "method": "minmax", "per_channel": True, "max_drop": 0.5, "min_agreement": 0.99,
    },
}


def recipe_inputs(name: str, bundle: Bundle, data_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """Make (if missing) the recipe's calibration and held-out sets; return the settings to run with.

    Raises:
        UsageError: unknown recipe.
    """
    if name not in RECIPES:
        raise UsageError(f"--recipe {name!r}: not one of {', '.join(RECIPES)}")
    r = RECIPES[name]
    root = Path(data_dir)
    gen = bundle.synth_generator
    calib = root / r["calib"]["dir"][gen]
    if not (calib / MANIFEST).is_file():
        from edge.calibration.collect import collect_synth
        logger.info("rendering the calibration set %s (synth seed %d)", calib, r["calib"]["seed"])
        collect_synth(calib, bundle, per_class=r["calib"]["per_class"], seed=r["calib"]["seed"], progress=progress,
                      generator=gen)
    data = root / r["eval"]["dir"][gen]
    if not (data / "synth.json").is_file():
        from edge.calibration.collect import SYNTH
        from edge.data.synth import generate_dataset
        logger.info("rendering the held-out set %s (synth seed %d)", data, r["eval"]["seed"])
        generate_dataset(data, r["eval"]["per_class"], r["eval"]["seed"], size=SYNTH["size"], frames=SYNTH["frames"],
                         fps=SYNTH["fps"], progress=progress, generator=gen)
    return {"calib": calib, "eval": data, **{k: r[k] for k in ("method", "per_channel", "max_drop", "min_agreement")}}


def guard_engines(target: str) -> list[str]:
    """Engines the result is checked on: the one targeted, or every installed one for 'both'."""
    return available_engines() if target == "both" else [target]


def run_quantize(model: str | Path, calib: str | Path, *, out: str | Path | None = None,
                 opts: QuantizeOptions | None = None, eval_data: str | Path | None = None,
                 split: str | None = None, max_drop: float = 1.0, min_agreement: float | None = None,
                 debug: int = 0, bench: bool = False, progress: bool = False) -> dict[str, Any]:
    """Quantize ``model`` (in place, or a copy at ``out``), guard, record; return the report.

    INT8 becomes the bundle's default precision only when ``eval_data`` is given and the guard passes;
    otherwise the file is kept, ``precision`` is fp32 and a WARNING says why.
    Raises:
        EdgeError: the first thing that fails (usage 64, missing input 66, bad data/model 65, engine 69).
    """
    from edge.calibration.guard import guard
    from edge.calibration.record import quantization_block, record_quantization
    opts = opts or QuantizeOptions()
    opts.check()
    if max_drop < 0:
        raise UsageError(f"--max-drop {max_drop:g}: expected >= 0 accuracy points")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise UsageError(f"--min-agreement {min_agreement:g}: expected a fraction in 0..1")
    bundle = fp32_bundle(model)
    calib_set = load_calibration_set(calib)  # everything checked before any copy or write
    calib_set.check()
    engines = guard_engines(opts.engine_target)
    missing = sorted(set(engines) - set(available_engines()))
    if missing:
        raise DeviceError(f"--engine-target {opts.engine_target}: {', '.join(missing)} is not installed "
                          f"(pip install edge-tsm[{missing[0]}])")
    if eval_data is not None:
        load_dataset(eval_data, split, labels=bundle.labels)
    if out is not None:
        bundle = copy_bundle(bundle, out)
    report = quantize_bundle(bundle, calib_set, opts, debug=debug, progress=progress)
    staged = bundle.model_copy(update={"files": {**bundle.files, "int8": Path(report["int8"]).name}})
    checked = None
    if eval_data is None:
        default, note = False, ("Not checked on a held-out set (quantize --eval DATASET), so not the default; "
                                "run it with --precision int8.")
        logger.warning("INT8 graph written but NOT made the default: no --eval held-out set to check it on; "
                       "precision stays fp32 (pick INT8 with --precision int8 / engine.precision: int8)")
    else:
        checked = guard(staged, eval_data, engines, max_drop=max_drop,
                        min_agreement=min_agreement, split=split, threads=opts.threads, progress=progress)
        from edge.int8check import reference_block  # check's INT8 self-check holds other CPUs to these figures
        checked["selfcheck"] = reference_block(staged, engines, threads=opts.threads)
        default = checked["passed"]
        if default:
            note = (f"Accuracy drop within {max_drop:g} points"
                    + (f" and top-1 agreement >= {min_agreement:g}" if min_agreement is not None else "")
                    + " on " + ", ".join(checked["engines"]) + ".")
            logger.info("INT8 is now the default precision of %s (%s)", bundle.root, note)
        else:
            note = "Kept at fp32: " + "; ".join(checked["reasons"]) + "."
            logger.warning("INT8 NOT made the default of %s: %s; precision stays fp32, %s kept (pick it with "
                           "--precision int8)", bundle.root, "; ".join(checked["reasons"]), Path(report["int8"]).name)
    block = quantization_block(report, checked, default, note)
    final = record_quantization(bundle, block)
    result = {"bundle": str(final.root), "int8": report["int8"], "precision": final.precision, "default": default,
              "note": note, "nodes": report["nodes"], "size_mb": report["mb"],
              "calibration": report["calibration"], "calibration_agreement": report["calibration_agreement"],
              "recipe": report["recipe"], "seconds": report["seconds"]}
    if checked is not None:
        result["guard"] = checked
    if "debug" in report:
        result["debug"] = report["debug"]
    if bench:
        from edge.bench.int8 import bench as run_bench
        result["bench"] = run_bench(final, engines, threads=(opts.threads or 1,))
    return result
