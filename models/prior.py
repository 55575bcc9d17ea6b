"""``train --balance``: the exported graph scores every label as if the training data had held them equally.

A network trained with cross-entropy learns p(label | frames) at the rates its training data showed the labels.
Balanced clips show each label equally, but windows of continuous recordings are about half ``no_motion``
(the pauses between motions): recipe v2's later stages see ``no_motion`` about 0.32 of the time and each motion
about 0.085, so a weak motion is scored as still. Subtracting the log of each label's training rate from its
logit gives the scores under equal rates (post-hoc logit adjustment, Menon et al., "Long-tail learning via
logit adjustment", ICLR 2021, with tau = 1); nothing is tuned, the offsets are counted from the data.

The offsets go into the exported graph's classifier bias, centred (their mean is zero, so a balanced dataset
changes nothing); ``weights.pt`` keeps the trained bias (what the next stage's ``--init`` or ``teach`` starts
from: adjusting it would be counted twice by the stage after) and records the offsets in its meta
(``prior_offsets``), which ``edge-tsm export`` applies again. Measured on recipe v2's stage-9 network (rates
from its training set): generator 5 held-out 0.924 -> 0.931, validation set (seed 61) 0.928 -> 0.939, generator
4 0.970 -> 0.972, events on the tuning recordings F1 0.958 -> 0.975.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch

from edge.data.dataset import load_dataset

logger = logging.getLogger(__name__)


def label_rates(data: str, split: str | None, labels: list[str], frames: int, stride: int) -> np.ndarray:
    """How often the training loss sees each label: a clip counts once for its label; a recording counts
    once per window it gives a training epoch (one per window span it holds), shared among the labels of
    its annotated frames."""
    ds = load_dataset(data, split, labels=labels)
    k = len(labels)
    count = np.zeros(k, np.float64)
    np.add.at(count, [c.label for c in ds.clips], 1.0)
    for r in ds.recordings:
        fl = r.frame_labels(r.frames)
        fl = fl[fl >= 0]
        if len(fl):
            count += r.windows(frames, stride) * np.bincount(fl, minlength=k)[:k] / len(fl)
    return count / max(count.sum(), 1e-12)


def balance_offsets(rates: np.ndarray, labels: list[str]) -> list[float]:
    """Per-label logit offsets: minus the log rate, centred. A label the data never showed gets the
    largest offset any shown label gets (no evidence either way; an infinite offset would be a guess)."""
    seen = rates > 0
    if not seen.any():
        return [0.0] * len(labels)
    log = np.where(seen, np.log(np.where(seen, rates, 1.0)), np.log(rates[seen].min()))
    off = -(log - log.mean())
    return [round(float(v), 4) for v in off]


def with_offsets(net: torch.nn.Module, offsets: list[float] | None) -> torch.nn.Module:
    """``net`` itself without offsets, else a copy whose classifier bias carries them."""
    if not offsets:
        return net
    out = copy.deepcopy(net)
    bias = out.classifier.bias
    with torch.no_grad():
        bias += torch.tensor(offsets, dtype=bias.dtype, device=bias.device)
    return out


def train_offsets(cfg: Any, labels: list[str]) -> list[float] | None:
    """The offsets of a run with ``cfg.balance`` (None without), logged with the rates they come from."""
    if not getattr(cfg, "balance", False):
        return None
    rates = label_rates(cfg.data, cfg.split, labels, cfg.frames, cfg.stride)
    off = balance_offsets(rates, labels)
    logger.info("balance: label rates %s -> logit offsets %s",
                ", ".join(f"{lab} {r:.3f}" for lab, r in zip(labels, rates, strict=True)),
                ", ".join(f"{v:+.2f}" for v in off))
    return off
