"""Export a TSM network to an online bundle; import reference TSM checkpoints.

Checkpoint layouts accepted by :func:`load_checkpoint`:

* ours (``edge-tsm train``): ``{"model": state_dict, "meta": {...}}``;
* the reference online demo: a raw state_dict with ``features.N.conv.M.*`` and ``classifier.*``
  (trained with the causal shift, as the online graph runs it);
* reference offline TSM: ``{"state_dict": ...}`` with ``module.base_model.features.N.conv.0.net.*``
  and ``module.new_fc.*`` (bidirectional shift: loses accuracy when run online).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from edge.errors import InputError, ModelError, UsageError
from edge.models import PRESETS
from edge.models.prior import with_offsets
from edge.models.tsm import OnlineTSM, TSMNet

logger = logging.getLogger(__name__)

OPSET = 17
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = ("mobilenetv2_tsm",)


def read_labels(spec: str | list[str]) -> list[str]:
    """Labels from a preset name (``jester``), a text file (one per line) or a list."""
    if isinstance(spec, list):
        return spec
    preset = PRESETS / f"{spec}.txt"
    path = preset if preset.is_file() else Path(spec)
    if not path.is_file():
        presets = sorted(p.stem for p in PRESETS.glob("*.txt"))
        raise InputError(f"labels {spec!r}: not a preset ({', '.join(presets)}) nor a readable file")
    labels = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not labels:
        raise InputError(f"labels file {path}: no labels in it")
    return labels


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint and return (state_dict in our key layout, meta).

    ``meta["layout"]`` is ``edge``, ``reference-online`` or ``reference-offline``; ``meta["shift"]``
    the shift the weights were trained with.
    Raises:
        InputError: the file is missing or not a torch checkpoint.
        ModelError: the keys are not one of the known layouts.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (pickle, zip, runtime) for a bad file
        raise InputError(f"checkpoint {path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"checkpoint {path}: expected a dict of tensors, got {type(obj).__name__}")
    if isinstance(obj.get("model"), dict) and isinstance(obj.get("meta"), dict):
        meta = dict(obj["meta"])
        meta.setdefault("layout", "edge")
        return obj["model"], meta
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"checkpoint {path}: not a state_dict (a dict of tensor names to tensors)")
    keys = list(sd)
    if any(k.startswith(("module.", "base_model.")) or ".net." in k or "new_fc." in k for k in keys):
        out = {}
        for k, v in sd.items():
            k2 = k.removeprefix("module.").removeprefix("base_model.")
            k2 = k2.replace(".conv.0.net.", ".conv.0.").replace("new_fc.", "classifier.")
            out[k2] = v
        return out, {"layout": "reference-offline", "shift": "bidirectional"}
    return dict(sd), {"layout": "reference-online", "shift": "causal"}


def infer_width(sd: dict[str, torch.Tensor]) -> float:
    """MobileNetV2 width multiplier from the stem's output channels (32 x width)."""
    w = sd.get("features.0.0.weight")
    if w is None:
        raise ModelError("checkpoint: missing key features.0.0.weight (the MobileNetV2 stem conv); "
                         f"first keys: {', '.join(list(sd)[:3])}")
    return round(w.shape[0] / 32, 3)


def load_into(net: TSMNet, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with one clear line for the first disagreement.

    Raises:
        ModelError: a missing or unexpected key, or a shape that differs.
    """
    own = net.state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if missing:
        raise ModelError(f"checkpoint {source}: missing key {missing[0]} (shape {tuple(own[missing[0]].shape)})"
                         f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; is it a "
                         f"MobileNetV2-TSM of width {net.width:g}?")
    if unexpected:
        raise ModelError(f"checkpoint {source}: unexpected key {unexpected[0]} (shape "
                         f"{tuple(sd[unexpected[0]].shape)})"
                         f"{f' and {len(unexpected) - 1} more' if len(unexpected) > 1 else ''}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelError(f"checkpoint {source}: key {k} has shape {tuple(v.shape)}, the network "
                             f"expects {tuple(own[k].shape)}")
    net.load_state_dict(sd, strict=False)


def net_from_checkpoint(path: str | Path, labels: list[str] | None = None) -> tuple[TSMNet, dict[str, Any], list[str]]:
    """Build a network from any accepted checkpoint; ``labels`` must match its classifier."""
    sd, meta = load_checkpoint(path)
    width = float(meta.get("width") or infer_width(sd))
    w = sd.get("classifier.weight")
    if w is None:
        raise ModelError(f"checkpoint {path}: missing key classifier.weight (the last layer)")
    labels = labels if labels is not None else meta.get("labels")
    if labels is None:
        raise UsageError(f"checkpoint {path} carries no labels: give --labels (a preset such as jester, or a file)")
    if len(labels) != w.shape[0]:
        raise ModelError(f"checkpoint {path}: classifier.weight has {w.shape[0]} classes, the labels have "
                         f"{len(labels)}")
    net = TSMNet(len(labels), width=width, shift=meta.get("shift", "causal"))
    load_into(net, sd, str(path))
    return net, meta, list(labels)


def export_onnx(net: TSMNet, path: Path, size: tuple[int, int]) -> list[dict[str, Any]]:
    """Write the online graph (one frame + states) as a single ONNX file; return the state specs."""
    net = net.eval()
    online = OnlineTSM(net).eval()
    shapes = net.state_shapes(size)
    frame = torch.zeros(1, 3, size[0], size[1])
    states = tuple(torch.zeros(s) for s in shapes)
    names_in = ["frame"] + [f"state{i}" for i in range(len(shapes))]
    names_out = ["logits"] + [f"state{i}_out" for i in range(len(shapes))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(online, (frame, *states), str(path), input_names=names_in, output_names=names_out,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return [{"input": i, "output": o, "shape": list(s)}
            for i, o, s in zip(names_in[1:], names_out[1:], shapes, strict=False)]


def export_bundle(net: TSMNet, out: str | Path, labels: list[str], *, size: tuple[int, int], name: str,
                  fps: float = 15.0, frame_stride: int = 1, clip_frames: int = 8, shift: str | None = None,
                  crop_scale: float = 1.0, resize: str = "short_side_crop", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  provenance: dict[str, Any] | None = None, card: str | None = None) -> Path:
    """Write ``model.onnx``, ``model.yaml`` and ``CARD.md`` into ``out``; return the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    states = export_onnx(net, out / "model.onnx", size)
    spec = {
        "format": 1,
        "kind": "online",
        "name": name,
        "arch": "mobilenetv2_tsm",
        "width": float(net.width),
        "labels": list(labels),
        "input": {"name": "frame", "size": [int(size[0]), int(size[1])], "layout": "NCHW", "colour": "RGB",
                  "mean": [float(m) for m in mean], "std": [float(s) for s in std],
                  "resize": resize, "crop_scale": float(crop_scale)},
        "output": {"name": "logits"},
        "states": states,
        "temporal": {"shift": shift or net.shift_mode, "fps": float(fps), "frame_stride": int(frame_stride),
                     "clip_frames": int(clip_frames)},
        "precision": "fp32",
        "files": {"fp32": "model.onnx"},
        "provenance": provenance or {},
    }
    with open(out / "model.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=False, width=120)
    (out / "CARD.md").write_text(card or default_card(spec), encoding="utf-8")
    return out


def default_card(spec: dict[str, Any]) -> str:
    prov = spec.get("provenance") or {}
    lines = [f"# {spec['name']}", "",
             f"Online MobileNetV2-TSM (width {spec['width']:g}), input {spec['input']['size'][1]}x"
             f"{spec['input']['size'][0]} {spec['input']['colour']}, {len(spec['states'])} shift states, "
             f"shift trained: {spec['temporal']['shift']}.", "",
             "## Labels", ""] + [f"{i}. {name}" for i, name in enumerate(spec["labels"])] + ["", "## Provenance", ""]
    lines += [f"- {k}: {v}" for k, v in prov.items()] or ["- not recorded"]
    return "\n".join(lines) + "\n"


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, arch: str = "mobilenetv2_tsm",
                      labels: str | None = None, size: int | None = None, name: str | None = None) -> Path:
    """``edge-tsm export``: checkpoint (ours or reference) -> bundle folder."""
    if arch not in ARCHS:
        raise UsageError(f"--arch {arch!r}: not one of {', '.join(ARCHS)}")
    net, meta, label_list = net_from_checkpoint(checkpoint, read_labels(labels) if labels else None)
    layout = meta["layout"]
    if meta.get("shift") == "bidirectional":
        print(f"warning: {checkpoint} holds offline TSM weights trained with the bidirectional shift; run "
              "online (past frames only) they lose accuracy. Fine-tune with the causal shift "
              "(edge-tsm train --init) for online use.", file=sys.stderr)
    if layout == "edge":
        side = meta.get("size", [112, 112])
        crop_scale = float(meta.get("crop_scale", 1.0))
        resize = meta.get("resize", "stretch")
    else:  # the reference models were trained at 224 from a 256 short side
        side = [224, 224]
        crop_scale = 224 / 256
        resize = "short_side_crop"
    if size:
        side = [size, size]
    prov = {"checkpoint": str(checkpoint), "layout": layout}
    prov.update({k: v for k, v in (meta.get("provenance") or {}).items()})
    offsets = meta.get("prior_offsets")   # train --balance: the graph carries them, weights.pt does not
    if offsets:
        if len(offsets) != len(label_list):
            raise ModelError(f"checkpoint {checkpoint}: prior_offsets has {len(offsets)} values for "
                             f"{len(label_list)} labels")
        net = with_offsets(net, [float(v) for v in offsets])
        prov["prior_offsets"] = dict(zip(label_list, offsets, strict=True))
    return export_bundle(net, out, label_list, size=(int(side[0]), int(side[1])),
                         name=name or meta.get("name") or Path(out).name,
                         fps=float(meta.get("fps", 15.0 if layout == "edge" else 12.0)),
                         frame_stride=int(meta.get("frame_stride", 1)), clip_frames=int(meta.get("clip_frames", 8)),
                         shift=meta.get("shift", "causal"), crop_scale=crop_scale, resize=resize,
                         provenance=prov)
