"""FP32 vs INT8 per-frame engine step, side by side in one run: ``python -m edge.bench.int8 --model B``
(and ``edge-tsm quantize --bench``).

The step is what the runtime does per frame after preprocessing: :meth:`OnlineClassifier.step_input`
(one ``backend.run`` with the states fed back, plus the softmax). Every (engine, precision, threads)
variant is compiled first, then the variants take turns (:func:`edge.bench.kit.interleave`, as in
``edge-tsm bench``), ``steps`` frames each, for ``rounds`` rounds, so a load change on the machine hits
them all alike; the figure is the median over rounds and the ratio is INT8 / FP32 of those medians on
the same engine and thread count. Not a test: a measurement.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import numpy as np

from edge.backends import available_engines, create_backend
from edge.bench.kit import Variant, interleave
from edge.bundle import Bundle, load_bundle
from edge.classifier import OnlineClassifier

logger = logging.getLogger(__name__)


def bench(bundle: Bundle, engines: list[str], *, threads: tuple[int | None, ...] = (1,), rounds: int = 30,
          steps: int = 20, seed: int = 0) -> dict[str, Any]:
    """Median ms per step of each variant and the INT8/FP32 ratios; needs files.fp32 and files.int8.

    Raises:
        ModelError: a graph is missing or cannot be loaded. DeviceError: an engine is not installed.
    """
    h, w = bundle.input.size
    x = np.random.default_rng(seed).standard_normal((1, 3, h, w)).astype(np.float32)
    clfs: list[OnlineClassifier] = []
    variants: dict[tuple[str, str, int | None], Variant] = {}
    try:
        for engine in engines:
            for t in threads:
                for prec in ("fp32", "int8"):
                    be = create_backend(engine, bundle.graph_path(prec), threads=t, precision_hint="f32")
                    clfs.append(OnlineClassifier(bundle, be))

                    def step(n: int, clf: OnlineClassifier = clfs[-1]) -> None:
                        for _ in range(n):
                            clf.step_input(x)
                    variants[(engine, prec, t)] = Variant(f"{engine}/{prec}/{t}", step)
        interleave(list(variants.values()), rounds, steps)
    finally:
        for clf in clfs:
            clf.backend.close()
    rows = []
    for engine in engines:
        for t in threads:
            f, q = (np.asarray(variants[(engine, p, t)].wall) for p in ("fp32", "int8"))
            rows.append({"engine": engine, "threads": t or "default", "fp32_ms": round(float(np.median(f)), 3),
                         "int8_ms": round(float(np.median(q)), 3),
                         "fp32_p90_ms": round(float(np.percentile(f, 90)), 3),
                         "int8_p90_ms": round(float(np.percentile(q, 90)), 3),
                         "ratio": round(float(np.median(q) / np.median(f)), 3)})
    return {"model": bundle.name, "input": [h, w], "rounds": rounds, "steps": steps, "rows": rows}


def format_bench(res: dict[str, Any]) -> str:
    lines = [f"per-frame engine step, {res['model']} at {res['input'][0]}x{res['input'][1]}, median of {res['rounds']} "
             f"interleaved rounds x {res['steps']} steps (ms)",
             f"{'engine':<12} {'threads':>7} {'fp32':>8} {'int8':>8} {'int8/fp32':>9}   (p90 fp32 / int8)"]
    lines += [f"{r['engine']:<12} {r['threads']!s:>7} {r['fp32_ms']:8.3f} {r['int8_ms']:8.3f} {r['ratio']:9.2f}   "
              f"({r['fp32_p90_ms']:.3f} / {r['int8_p90_ms']:.3f})" for r in res["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.bench.int8", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="bundle with files.fp32 and files.int8")
    p.add_argument("--engines", default=",".join(available_engines()), help="comma-separated (default: installed)")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, 0 = engine default (default 1)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=20, help="frames per variant per round")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from edge.errors import EdgeError
    try:
        threads = tuple(int(t) or None for t in a.threads.split(","))
    except ValueError:
        print(f"edge.bench.int8: error: --threads {a.threads!r}: expected integers such as 1,2", file=sys.stderr)
        return 64
    try:
        res = bench(load_bundle(a.model), [e for e in a.engines.split(",") if e], threads=threads, rounds=a.rounds,
                    steps=a.steps)
    except EdgeError as e:
        print(f"edge.bench.int8: error: {e}", file=sys.stderr)
        return e.exit_code
    if a.json:
        import json
        print(json.dumps(res))
    else:
        print(format_bench(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
