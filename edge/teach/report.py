"""How good the taught head is, measured on the given clips: k-fold cross-validation, the k-shot curve,
and what goes into model.yaml and CARD.md.

Folds group by clip: every view of a clip (its phases, augmented copies, still negatives) stays on the
side of its clip, and only the plain view (what the daemon sees) of a held-out clip is scored, as
``edge-tsm eval`` scores a clip: the mean softmax over its frames.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from edge.teach.features import BACKGROUND, ClipSet, View
from edge.teach.head import HeadConfig, fit, predict_clip

MAX_FOLDS = 5


def folds(clips: ClipSet, n: int, seed: int) -> list[int]:
    """A fold number per clip, stratified by label (each class's clips dealt round-robin after a shuffle)."""
    out = [0] * len(clips.clips)
    rng = np.random.default_rng(seed)
    for lab in clips.labels:
        idx = [i for i, c in enumerate(clips.clips) if c.label == lab]
        rng.shuffle(idx)
        start = int(rng.integers(0, n))
        for j, i in enumerate(idx):
            out[i] = (start + j) % n
    return out


def _train(views: list[View], keep: set[int], labels: list[str], cfg: HeadConfig):  # noqa: ANN202
    use = [v for v in views if v.clip in keep or v.clip < 0]  # clip < 0: generated negatives, in every fold
    seqs = [v.features for v in use]
    ys = [labels.index(v.label) for v in use]
    return fit(seqs, ys, len(labels), cfg)


def cross_validate(clips: ClipSet, views: list[View], cfg: HeadConfig, *, ks: tuple[int, ...] = (),
                   seed: int = 0, progress: Callable[[str, int, int], None] | None = None,
                   cancel: threading.Event | None = None) -> dict:
    """Cross-validated figures: accuracy, per-class recall, confusion, the misclassified clips, and for
    each k in ``ks`` (smaller than the smallest class) the accuracy of heads trained on k clips per class.

    Needs 2 clips in every class the user gave; returns ``{"folds": 0}`` otherwise.
    """
    from edge.teach.features import Cancelled
    labels = clips.labels
    counts = clips.counts()
    user_counts = [n for lab, n in counts.items() if lab != BACKGROUND or n > 0]
    smallest = min(user_counts)
    if smallest < 2:
        return {"folds": 0}
    n = min(MAX_FOLDS, smallest)
    fold = folds(clips, n, seed)
    plain = {v.clip: v for v in views if v.kind == "plain"}
    ks = tuple(k for k in ks if k < smallest * (n - 1) / n)
    conf = np.zeros((len(labels), len(labels)), np.int64)
    wrong = []
    curve = {k: [0, 0] for k in ks}
    total = n * (1 + len(ks))
    done = 0
    rng = np.random.default_rng(seed + 1)
    for f in range(n):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        train = {i for i in range(len(clips.clips)) if fold[i] != f}
        test = [i for i in range(len(clips.clips)) if fold[i] == f]
        head = _train(views, train, labels, cfg)
        for i in test:
            pred = int(np.argmax(predict_clip(head, plain[i].features)))
            truth = labels.index(clips.clips[i].label)
            conf[truth, pred] += 1
            if pred != truth:
                wrong.append({"path": str(clips.clips[i].path), "label": labels[truth], "predicted": labels[pred]})
        done += 1
        if progress is not None:
            progress("cross-validation", done, total)
        for k in ks:
            keep = set()
            for lab in labels:
                idx = [i for i in sorted(train) if clips.clips[i].label == lab]
                keep |= set(rng.permutation(idx)[:k].tolist())
            head = _train(views, keep, labels, cfg)
            for i in test:
                curve[k][0] += int(np.argmax(predict_clip(head, plain[i].features))) == labels.index(
                    clips.clips[i].label)
                curve[k][1] += 1
            done += 1
            if progress is not None:
                progress("cross-validation", done, total)
    scored = conf.sum()
    support = conf.sum(1)
    recall = {lab: round(float(conf[i, i] / support[i]), 4) for i, lab in enumerate(labels) if support[i]}
    all_k = int(round(smallest * (n - 1) / n))
    out_curve = [{"k": k, "accuracy": round(c / t, 4)} for k, (c, t) in curve.items() if t]
    out_curve.append({"k": all_k, "accuracy": round(float(np.trace(conf) / scored), 4), "all": True})
    return {"folds": n, "accuracy": round(float(np.trace(conf) / scored), 4), "per_class_recall": recall,
            "confusion": conf.tolist(), "misclassified": wrong, "curve": out_curve, "clips_scored": int(scored)}


def needs_more(cv: dict, counts: dict[str, int]) -> str | None:
    """The class that most needs more clips: lowest cross-validated recall, then fewest clips; None when every
    class was recalled perfectly (no class to name)."""
    rec = cv.get("per_class_recall") or {}
    if not rec:
        return min(counts, key=lambda k: counts[k]) if counts else None
    if min(rec.values()) >= 1.0:
        return None
    return min(rec, key=lambda lab: (rec[lab], counts.get(lab, 0)))


def card(name: str, base: str, labels: list[str], counts: dict[str, int], cv: dict, made: dict, seconds: float,
         settings: dict, int8: dict | None, skipped: list[dict]) -> str:
    """CARD.md of the taught bundle."""
    lines = [f"# {name}", "", f"Taught by `edge-tsm teach` from the base bundle **{base}** in {seconds:.1f} s: the "
             "base network's features (unchanged) and a new head trained on the clips below (no PyTorch).", "",
             "## Classes", "", "| class | clips | cross-validated recall |", "|---|---|---|"]
    rec = cv.get("per_class_recall", {})
    for lab in labels:
        r = rec.get(lab)
        extra = f" (+ {made.get(lab, 0)} made by teach)" if made.get(lab) else ""
        lines.append(f"| {lab} | {counts.get(lab, 0)}{extra} | {'-' if r is None else f'{r:.2f}'} |")
    lines.append("")
    if cv.get("folds"):
        lines += [f"Cross-validated accuracy ({cv['folds']}-fold, grouped by clip, each held-out clip scored as "
                  f"`edge-tsm eval` scores it): **{cv['accuracy']:.3f}** over {cv['clips_scored']} clips.", "",
                  "With fewer clips per class (heads trained on k clips of each class of every fold's training part):",
                  "", "| clips per class | accuracy |", "|---|---|"]
        lines += [f"| {p['k']}{' (all)' if p.get('all') else ''} | {p['accuracy']:.3f} |" for p in cv["curve"]]
        lines.append("")
        conf = cv["confusion"]
        pairs = sorted(((conf[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels))
                        if i != j and conf[i][j]), reverse=True)
        if pairs:
            lines += ["Confusions (true -> predicted: clips): "
                      + ", ".join(f"{a} -> {b}: {n}" for n, a, b in pairs[:8]), ""]
        more = needs_more(cv, counts)
        if more is not None:
            lines += [f"Needs more clips first: **{more}** (lowest cross-validated recall).", ""]
    else:
        lines += ["No cross-validation: a class has fewer than 2 clips.", ""]
    if int8:
        lines += ["## INT8", "", "`model.int8.onnx`: the base's INT8 backbone with the same head; top-1 agreement "
                  f"with FP32 on {int8['frames']} frames of the clips: {int8['agreement']:.4f}.", ""]
    lines += ["## Head", "", "```", *(f"{k}: {v}" for k, v in settings.items()), "```", ""]
    if skipped:
        lines += ["## Skipped clips", "", *(f"- {s['path']}: {s['why']}" for s in skipped), ""]
    return "\n".join(lines)
