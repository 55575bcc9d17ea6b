"""``train --init``: fine-tuning starts from a checkpoint, a bundle's weights.pt or the default model."""
from __future__ import annotations

import logging
from pathlib import Path

from edge.errors import DataError
from edge.models.export import load_into, net_from_checkpoint
from edge.models.tsm import TSMNet

logger = logging.getLogger(__name__)


def _init_file(ref: str) -> Path:
    """``--init`` -> the weights file: a checkpoint, a bundle folder's weights.pt, or 'default'."""
    path = Path(ref)
    if ref == "default":
        from edge.models import DEFAULT_BUNDLE
        path = DEFAULT_BUNDLE
    if path.is_dir():
        if not (path / "weights.pt").is_file():
            raise DataError(f"--init {ref}: bundle {path} has no weights.pt (the torch weights train writes); "
                            "give a checkpoint file instead")
        path = path / "weights.pt"
    return path


def init_labels(ref: str) -> list[str]:
    """The labels of the ``--init`` model, in its classifier's order."""
    return list(net_from_checkpoint(_init_file(ref), None)[2])


def init_from(net: TSMNet, ref: str, labels: list[str]) -> None:
    """Fine-tune start: weights from a checkpoint or a bundle folder.

    Classifier rows are matched by label name: a label the source model knows keeps its row, a new
    label gets a freshly initialised one (so a different label order or an added class loses nothing).
    A bundle holds no torch weights but its ``weights.pt`` when ``train`` wrote it; for bundles without
    one, the checkpoint must be given.
    """
    path = _init_file(ref)
    src, meta, src_labels = net_from_checkpoint(path, None)
    sd = src.state_dict()
    if list(src_labels) != list(labels):
        fresh = net.state_dict()
        w, b = fresh["classifier.weight"].clone(), fresh["classifier.bias"].clone()
        kept = 0
        for i, lab in enumerate(labels):
            if lab in src_labels:
                j = list(src_labels).index(lab)
                w[i], b[i] = sd["classifier.weight"][j], sd["classifier.bias"][j]
                kept += 1
        sd = {**sd, "classifier.weight": w, "classifier.bias": b}
        logger.info("--init %s: labels differ (%d -> %d): %d classifier rows kept by name, %d new", ref,
                    len(src_labels), len(labels), kept, len(labels) - kept)
    if abs(src.width - net.width) > 1e-6:
        raise DataError(f"--init {ref}: width {src.width:g} differs from --width {net.width:g}")
    load_into(net, sd, str(path))
