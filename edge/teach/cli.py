"""``edge-tsm teach``: the command line around :func:`edge.teach.teach` (a progress bar, the report)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from edge.teach.core import TeachOptions, TeachReport, teach
from edge.teach.head import VIEWS, HeadConfig


class _Bars:
    """One tqdm bar per stage on stderr (plain lines when tqdm is not installed)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None
        try:
            from tqdm import tqdm
            self._tqdm: Any = tqdm
        except ImportError:
            self._tqdm = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            if self._tqdm is not None and total > 1:
                self.bar = self._tqdm(total=total, desc=f"teach {stage}", unit="step" if stage != "features"
                                      else "pass", file=sys.stderr, dynamic_ncols=True, leave=False)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif done == total and total > 1:
            print(f"teach {stage}: {done}/{total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_report(r: TeachReport, skipped_cv: bool = False) -> str:
    """What ``edge-tsm teach`` prints: where the bundle is, the cross-validated figures, what to do next."""
    lines = [f"taught {r.out} in {r.seconds:.1f} s ({r.engine}; precision {r.precision}"
             + (f", INT8 agreement {r.int8_agreement:.4f}" if r.int8_agreement is not None else "") + ")"]
    lines.append("clips: " + ", ".join(f"{k} {v}" for k, v in r.clips_per_class.items())
                 + (f" (+ {', '.join(f'{n} {k}' for k, n in r.made.items())} made by teach)" if r.made else ""))
    if r.skipped:
        lines.append(f"skipped {len(r.skipped)} unreadable clip(s): "
                     + ", ".join(f"{s['path']} ({s['why']})" for s in r.skipped[:5]) + (" ..." if len(r.skipped) > 5
                                                                                          else ""))
    if math.isnan(r.accuracy):
        lines.append("no cross-validation: " + ("--no-cv" if skipped_cv else "give at least 2 clips per class"))
    else:
        lines.append(f"cross-validated accuracy {r.accuracy:.3f} ({r.folds}-fold); per class: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in r.per_class_recall.items()))
        lines.append("with k clips per class: " + ", ".join(f"k={p['k']} {p['accuracy']:.3f}" for p in r.curve))
        if r.needs_more:
            lines.append(f"needs more clips first: {r.needs_more}")
        for m in r.misclassified[:10]:
            lines.append(f"  {m['path']}: {m['label']} taken for {m['predicted']}")
    return "\n".join(lines)


def run(a: argparse.Namespace) -> int:
    head = HeadConfig(frames=a.frames, views=VIEWS if a.frames > 1 else ("current",))
    opts = TeachOptions(head=head, augment=a.augment, cross_validate=not a.no_cv, threads=a.threads, seed=a.seed)
    bars = _Bars(not a.quiet and not a.json)
    try:
        r = teach(a.base, a.data, a.out, engine=a.engine, progress=bars, options=opts, name=a.name)
    finally:
        bars.close()
    if a.json:
        d = {k: (str(v) if k == "out" else v) for k, v in vars(r).items()}
        d["accuracy"] = None if math.isnan(r.accuracy) else r.accuracy
        print(json.dumps(d))
    else:
        print(format_report(r, skipped_cv=a.no_cv))
    return 0
