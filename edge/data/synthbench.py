"""How fast the generators render: generator 4 and 5 side by side (``python -m edge.data.synthbench``).

Each round renders ``--clips`` clips of the nine classes with each generator in turn (interleaved, so a
change in the machine's load hits both), then writes them as a dataset (render + mp4v encode). It prints
clips per wall-second and per CPU-second (this process's CPU time: the figure to compare on a shared
machine, where wall time also counts waiting for a core) and the ratio of generator 5 to 4.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from edge.data import textures
from edge.data.synth import CLASSES, generate_dataset, render_clip


def measure(clips: int = 36, rounds: int = 3, size: tuple[int, int] = (160, 120), frames: int = 24) -> dict:
    """Median clips/s per generator and stage (``render``, ``dataset``), wall and CPU, over ``rounds``."""
    textures.photos()  # loaded once per process: not part of a clip's cost
    per_class = max(1, clips // len(CLASSES))
    got: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for gen in (4, 5):
                t, c = time.perf_counter(), time.process_time()
                for i in range(per_class):
                    for k, label in enumerate(CLASSES):
                        render_clip(label, np.random.default_rng([900 + r, k, i]), size, frames, generator=gen)
                n = per_class * len(CLASSES)
                got.setdefault(f"render_v{gen}", []).append((n / (time.perf_counter() - t),
                                                             n / max(time.process_time() - c, 1e-9)))
                t, c = time.perf_counter(), time.process_time()
                generate_dataset(os.path.join(tmp, f"r{r}g{gen}"), per_class, 900 + r, size, frames, generator=gen)
                got.setdefault(f"dataset_v{gen}", []).append((n / (time.perf_counter() - t),
                                                              n / max(time.process_time() - c, 1e-9)))
    out: dict = {"clips_per_round": per_class * len(CLASSES), "rounds": rounds, "size": list(size), "frames": frames,
                 "photos": len(textures.photos()), "loadavg": [round(v, 2) for v in os.getloadavg()]}
    for key, vals in got.items():
        v = np.array(vals)
        out[key] = {"wall_clips_s": round(float(np.median(v[:, 0])), 1),
                    "cpu_clips_s": round(float(np.median(v[:, 1])), 1)}
    for stage in ("render", "dataset"):
        v4, v5 = out[f"{stage}_v4"]["cpu_clips_s"], out[f"{stage}_v5"]["cpu_clips_s"]
        out[f"{stage}_cpu_cost_v5_over_v4"] = round(v4 / v5, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.data.synthbench", description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=36, help="clips per generator and round (default 36)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    a = p.parse_args(argv)
    if a.clips < 1 or a.rounds < 1:
        p.error("--clips and --rounds must be >= 1")
    print(json.dumps(measure(a.clips, a.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
