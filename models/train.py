"""``edge-tsm train``: train a MobileNetV2-TSM on a ``ROOT/<label>/*.mp4`` dataset and export a bundle.

Recipe: SGD with momentum and weight decay, linear warm-up then cosine decay, label smoothing,
clips of ``frames`` frames taken at ``stride`` from a random start, one random crop/flip/colour
jitter per clip (see :class:`edge.data.dataset.ClipAugment`), loss on the mean of the per-frame
logits (the TSM consensus). The causal shift is the default so the weights run online unchanged;
``--no-shift`` trains the TSN-style ablation. Deterministic for a given ``--seed`` and thread count.
A checkpoint (``checkpoint.pt``) is written after every epoch; ``--resume`` continues from it.
"""
from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edge.data.dataset import ClipAugment, VideoDataset, center_crop_frames, load_dataset, read_video, video_fps
from edge.errors import DataError, UsageError
from edge.models.export import IMAGENET_MEAN, IMAGENET_STD, export_bundle, load_into, net_from_checkpoint
from edge.models.tsm import TSMNet
from edge.util import atomic_write

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None
    split: str | None = None
    size: int = 112
    width: float = 1.0
    frames: int = 8
    stride: int = 3
    epochs: int = 8
    batch: int = 16
    lr: float = 0.01
    optimizer: str = "sgd"          # sgd (momentum, Nesterov) | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: float = 0.05            # fraction of the steps
    label_smoothing: float = 0.1
    dropout: float = 0.2
    shift: str = "causal"
    seed: int = 0
    threads: int | None = None
    init: str | None = None
    resume: bool = False
    max_steps: int | None = None    # stop early (smoke tests)
    cache_gb: float = 6.0           # keep decoded clips in memory up to this size
    name: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


class ClipSource:
    """Decoded clips, cached in memory when they fit in ``cache_gb``."""

    def __init__(self, ds: VideoDataset, cache_gb: float) -> None:
        self.ds = ds
        first = read_video(ds.clips[0].path)
        est = first.nbytes * len(ds.clips) / 1e9
        self.cache: list[np.ndarray] | None = None
        if est <= cache_gb:
            self.cache = [first] + [read_video(c.path) for c in ds.clips[1:]]

    def __len__(self) -> int:
        return len(self.ds.clips)

    def frames(self, i: int) -> np.ndarray:
        return self.cache[i] if self.cache is not None else read_video(self.ds.clips[i].path)


def sample_window(n: int, frames: int, stride: int, rng: np.random.Generator | None) -> np.ndarray:
    """Indices of ``frames`` frames at ``stride``; random start (``rng``) or centred; clamped at the end."""
    span = (frames - 1) * stride + 1
    start = 0 if n <= span else (int(rng.integers(0, n - span + 1)) if rng is not None else (n - span) // 2)
    return np.minimum(start + np.arange(frames) * stride, n - 1)


def to_tensor(rgb: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """T x H x W x 3 uint8 RGB -> T x 3 x H x W float, normalised."""
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def lr_at(step: int, total: int, base: float, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return base * (step + 1) / w
    return 0.5 * base * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


@torch.no_grad()
def validate(net: TSMNet, src: ClipSource, size: int, stride: int) -> dict[str, float]:
    """Clip accuracy of the offline model over whole clips (causal shift: equals the online graph)."""
    net.eval()
    correct = 0
    for i, clip in enumerate(src.ds.clips):
        frames = src.frames(i)[::stride]
        x = to_tensor(center_crop_frames(frames, (size, size), resize="stretch"))[None]
        x = x.contiguous(memory_format=torch.contiguous_format)
        prob = F.softmax(net(x)[0], dim=-1).mean(0)
        correct += int(prob.argmax()) == clip.label
    return {"accuracy": correct / max(1, len(src))}


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train, write ``checkpoint.pt`` each epoch and export the bundle into ``cfg.out``; return it."""
    if cfg.shift not in ("causal", "none", "bidirectional"):
        raise UsageError(f"shift {cfg.shift!r}: not one of causal, none, bidirectional")
    for key in ("epochs", "batch", "frames", "stride", "size"):
        if getattr(cfg, key) < 1:
            raise UsageError(f"--{key} {getattr(cfg, key)}: must be >= 1")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(cfg.data, cfg.split)
    if cfg.init and not (Path(cfg.data) / "labels.txt").is_file():
        # Fine-tuning keeps the model's classes (in its order) even where the new data has no clips of
        # some, and adds the dataset's new ones after them: field data rarely shows every class.
        have = init_labels(cfg.init)
        new = [lab for lab in ds.labels if lab not in have]
        ds = load_dataset(cfg.data, cfg.split, labels=[*have, *new])
        logger.info("--init %s: its %d labels kept%s", cfg.init, len(have),
                    f", {len(new)} new: {', '.join(new)}" if new else "")
    logger.info("dataset %s: %d clips, %d labels", cfg.data, len(ds.clips), len(ds.labels))
    t0 = time.perf_counter()
    src = ClipSource(ds, cfg.cache_gb)
    logger.info("decoded in %.1f s (cached: %s)", time.perf_counter() - t0, src.cache is not None)
    fps = video_fps(ds.clips[0].path)

    net = TSMNet(len(ds.labels), width=cfg.width, shift=cfg.shift, dropout=cfg.dropout)
    if cfg.init:
        init_from(net, cfg.init, ds.labels)
    net = net.to(memory_format=torch.channels_last)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    else:
        raise UsageError(f"--optimizer {cfg.optimizer!r}: not one of sgd, adamw")
    aug = ClipAugment((cfg.size, cfg.size), ds.labels, resize="stretch")
    steps_per_epoch = max(1, len(src) // cfg.batch)
    total = steps_per_epoch * cfg.epochs          # the schedule's length
    stop_at = min(total, cfg.max_steps) if cfg.max_steps else total
    ckpt_path = out / "checkpoint.pt"
    start_epoch, step, history = 0, 0, []
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step, history = ck["epoch"], ck["step"], ck.get("history", [])
        torch.set_rng_state(ck["torch_rng"])
        logger.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=stop_at, initial=step, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        if step >= stop_at:
            break
        net.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(src))
        seen = correct = 0
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            if step >= stop_at:
                break
            idx = order[b * cfg.batch:(b + 1) * cfg.batch]
            clips, targets = [], []
            for i in idx:
                frames = src.frames(int(i))
                sel = frames[sample_window(len(frames), cfg.frames, cfg.stride, rng)]
                rgb, label = aug(sel, ds.clips[int(i)].label, rng)
                clips.append(to_tensor(rgb))
                targets.append(label)
            x = torch.stack(clips)
            y = torch.tensor(targets)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg.lr, cfg.warmup)
            logits = net(x).mean(1)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 20.0)
            opt.step()
            step += 1
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        history.append({"epoch": epoch + 1, "step": step, "loss": loss_sum / max(1, seen),
                        "train_acc": correct / max(1, seen), "seconds": round(time.perf_counter() - t_epoch, 1)})
        logger.info("epoch %d/%d: loss %.4f, train acc %.3f", epoch + 1, cfg.epochs, history[-1]["loss"],
                    history[-1]["train_acc"])
        # serialized in memory, then replaced at once: a kill mid-write leaves the previous epoch's checkpoint whole
        buf = io.BytesIO()
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                    "history": history, "torch_rng": torch.get_rng_state(),
                    "meta": checkpoint_meta(cfg, ds.labels, fps), "config": asdict(cfg)}, buf)
        atomic_write(ckpt_path, buf.getvalue(), mode=0o644)
    if bar is not None:
        bar.close()
    net = net.to(memory_format=torch.contiguous_format).eval()
    metrics: dict[str, Any] = {"train": history[-1] if history else {}}
    if cfg.val:
        vsrc = ClipSource(load_dataset(cfg.val, labels=ds.labels), cfg.cache_gb)
        metrics["val"] = validate(net, vsrc, cfg.size, cfg.stride)
        logger.info("validation (%s): accuracy %.4f", cfg.val, metrics["val"]["accuracy"])
    meta = checkpoint_meta(cfg, ds.labels, fps)
    # weights.pt: the torch weights for fine-tuning (--init), in float16 to halve the bundle's size.
    half = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"model": half, "meta": meta}, out / "weights.pt")
    prov = dict(meta["provenance"])
    prov["metrics"] = metrics
    export_bundle(net, out, ds.labels, size=(cfg.size, cfg.size), name=cfg.name or out.name, fps=fps,
                  frame_stride=cfg.stride, clip_frames=cfg.frames, resize="stretch", provenance=prov)
    (out / "train.json").write_text(json.dumps({"config": asdict(cfg), "history": history, "metrics": metrics,
                                                "seconds": round(sum(h.get("seconds", 0.0) for h in history), 1)},
                                               indent=1), encoding="utf-8")
    return out


def checkpoint_meta(cfg: TrainConfig, labels: list[str], fps: float) -> dict[str, Any]:
    return {"layout": "edge", "labels": list(labels), "width": cfg.width, "shift": cfg.shift,
            "size": [cfg.size, cfg.size], "crop_scale": 1.0, "resize": "stretch", "fps": fps,
            "frame_stride": cfg.stride,
            "clip_frames": cfg.frames, "name": cfg.name,
            "provenance": {"data": str(cfg.data), "seed": cfg.seed, "epochs": cfg.epochs, "shift": cfg.shift,
                           **cfg.provenance}}


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
