"""``edge-tsm train``: train a MobileNetV2-TSM on a ``ROOT/<label>/*.mp4`` dataset and export a bundle.

Recipe: SGD with momentum and weight decay (or AdamW), linear warm-up then cosine decay, label smoothing,
clips of ``frames`` frames taken at ``stride`` from a random start, one random crop/flip/colour
jitter per clip (see :class:`edge.data.dataset.ClipAugment`), loss on the mean of the per-frame
logits (the TSM consensus). The causal shift is the default so the weights run online unchanged;
``--no-shift`` trains the TSN-style ablation. A checkpoint (``checkpoint.pt``) is written after every
epoch; ``--resume`` continues from it.

Where it runs: ``--device`` (CPU or CUDA) and ``--amp`` (:mod:`edge.models.precision`); clips decoded and
augmented by ``--workers`` loader processes (:mod:`edge.models.loader`); one process, or N under
``torchrun`` (:mod:`edge.models.distributed`). ``--batch`` is the global batch: N processes take
``batch / N`` clips each per step, and together compute the loss and gradients one process computes
for the same seed, so the result does not depend on how many processes trained it. Deterministic on the
CPU for a given seed and thread count, whatever the number of workers.
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

from edge.data.dataset import ClipAugment, center_crop_frames, load_dataset, video_fps
from edge.errors import DataError, InputError, UsageError
from edge.models import distributed as dist
from edge.models.export import export_bundle
from edge.models.finetune import init_from, init_labels
from edge.models.loader import (
    IGNORE,
    ClipDataset,
    ClipSource,
    StepSampler,
    cache_budget_gb,
    input_hw,
    make_loader,
    normalize,
    sample_window,
    synth_provenance,
)
from edge.models.precision import Amp, default_workers, probe_step, resolve_amp, resolve_device
from edge.models.prior import train_offsets, with_offsets
from edge.models.tsm import TSMNet
from edge.util import atomic_write

__all__ = ["TrainConfig", "train", "lr_at", "sample_window", "validate", "checkpoint_meta", "init_labels"]
logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None
    split: str | None = None
    size: int | str = 112           # square side, or "WIDTHxHEIGHT" (e.g. "160x120": a 4:3 camera's aspect kept)
    width: float = 1.0
    frames: int = 8
    stride: int = 3
    epochs: int = 8
    batch: int = 16                 # the global batch: clips per step over all processes
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
    cache_gb: float | None = None   # keep decoded clips in memory up to this size (per process); None: half the
                                    # memory available when the run starts, shared by this machine's processes
    name: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    amp: str = "auto"               # auto | bf16 | fp16 | off
    workers: int | None = None      # loader processes (None: from the cores; 0: decode in this process)
    sync_bn: bool = True            # batch norm over the global batch under torchrun
    dist_timeout: float = 600.0     # seconds to wait for the other processes (rendezvous, collectives)
    channels_last: bool = True      # faster on CPU and GPU
    float64: bool = False           # double precision: slow; exact comparisons (N processes against one)
    balance: bool = False           # the graph scores labels as if equally frequent (models/prior.py)

    def __post_init__(self) -> None:
        if isinstance(self.size, str) and self.size.strip().isdigit():
            self.size = int(self.size)   # "112" is the square side 112: one spelling in train.json and the recipe


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """T x H x W x 3 uint8 RGB -> T x 3 x H x W float, normalised."""
    return normalize(torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2))


def lr_at(step: int, total: int, base: float, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return base * (step + 1) / w
    return 0.5 * base * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


@torch.no_grad()
def validate(net: TSMNet, src: ClipSource, size: int | str, stride: int,
             device: torch.device | None = None) -> dict[str, float]:
    """Clip accuracy of the offline model over whole clips (causal shift: equals the online graph);
    clips that cannot be decoded are left out and counted."""
    net.eval()
    correct = n = 0
    for i, clip in enumerate(src.ds.clips):
        try:
            frames = src.frames(i)[::stride]
        except InputError:
            continue
        x = to_tensor(center_crop_frames(frames, input_hw(size), resize="stretch"))[None]
        x = x.to(device or "cpu").contiguous(memory_format=torch.contiguous_format)
        prob = F.softmax(net(x)[0].float(), dim=-1).mean(0)
        correct += int(prob.argmax()) == clip.label
        n += 1
    return {"accuracy": correct / max(1, n), "clips": n, "skipped": len(src.ds.clips) - n}


def _check(cfg: TrainConfig) -> None:
    if cfg.shift not in ("causal", "none", "bidirectional"):
        raise UsageError(f"shift {cfg.shift!r}: not one of causal, none, bidirectional")
    input_hw(cfg.size)   # one clear line for a malformed size
    for key in ("epochs", "batch", "frames", "stride"):
        if getattr(cfg, key) < 1:
            raise UsageError(f"--{key} {getattr(cfg, key)}: must be >= 1")
    if cfg.workers is not None and cfg.workers < 0:
        raise UsageError(f"--workers {cfg.workers}: must be >= 0 (0 decodes in the training process)")
    if cfg.optimizer not in ("sgd", "adamw"):
        raise UsageError(f"--optimizer {cfg.optimizer!r}: not one of sgd, adamw")
    if cfg.float64 and cfg.amp not in ("auto", "off"):
        raise UsageError(f"--float64 with --amp {cfg.amp}: mixed precision and float64 exclude each other")
    if cfg.cache_gb is not None and not cfg.cache_gb >= 0:
        raise UsageError(f"--cache-gb {cfg.cache_gb:g}: must be >= 0 (0 streams every clip from disk)")
    if not cfg.dist_timeout > 0:
        raise UsageError(f"--dist-timeout {cfg.dist_timeout:g}: must be > 0 seconds")


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train, write ``checkpoint.pt`` each epoch and export the bundle into ``cfg.out``; return it.

    Under torchrun every process calls this; rank 0 alone logs, checkpoints, evaluates and exports.

    Raises:
        UsageError: a bad argument (also: a --batch the world size does not divide).
        DeviceError: no such device, no native bf16 for --amp bf16, or a failed rendezvous.
        InputError / DataError: the dataset is missing or malformed.
    """
    _check(cfg)
    world = dist.world_from_env()
    device = resolve_device(cfg.device, world.local_rank)
    if world.distributed and cfg.batch % world.size:
        raise UsageError(f"--batch {cfg.batch} over {world.size} processes: the global batch must be a multiple of "
                         f"the world size (each process takes batch/{world.size} clips); give e.g. --batch "
                         f"{max(world.size, cfg.batch // world.size * world.size)}")
    if device.type == "cuda":
        torch.cuda.set_device(device)   # before the process group: NCCL binds each process to its GPU
    owned = world.distributed and not dist.initialized()
    world = dist.setup(device.type, cfg.dist_timeout)
    try:
        return _train(cfg, world, device, progress)
    finally:
        if owned:
            dist.teardown()


def _train(cfg: TrainConfig, world: dist.World, device: torch.device, progress: bool) -> Path:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ds = load_dataset(cfg.data, cfg.split)
    if cfg.init and not (Path(cfg.data) / "labels.txt").is_file():
        # Fine-tuning keeps the model's classes (in its order) even where the new data has no clips of
        # some, and adds the dataset's new ones after them: field data rarely shows every class.
        have = init_labels(cfg.init)
        new = [lab for lab in ds.labels if lab not in have]
        ds = load_dataset(cfg.data, cfg.split, labels=[*have, *new])
        logger.info("--init %s: its %d labels kept%s", cfg.init, len(have),
                    f", {len(new)} new: {', '.join(new)}" if new else "")
    if world.distributed and len(ds.clips) < cfg.batch:
        raise UsageError(f"--batch {cfg.batch}: dataset {cfg.data} has only {len(ds.clips)} clips, fewer than one "
                         f"global batch over {world.size} processes; give a --batch of at most {len(ds.clips)}")
    logger.info("dataset %s: %d clips, %d labels", cfg.data, len(ds.clips), len(ds.labels))
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache_gb = cache_budget_gb(cfg.cache_gb, world.local_size)
    src = ClipSource(ds, cache_gb)
    logger.info("decoded in %.1f s (cached: %s; cache up to %.1f GB%s)", time.perf_counter() - t0, src.cached,
                cache_gb, " by --cache-gb" if cfg.cache_gb is not None else ", half the memory available")
    if len(src.bad) == len(src):
        raise DataError(f"dataset {cfg.data}: none of its {len(src)} clips can be decoded")
    fps = video_fps(next(p for i, p in enumerate(src.paths) if i not in src.bad))

    net = TSMNet(len(ds.labels), width=cfg.width, shift=cfg.shift, dropout=cfg.dropout)
    if cfg.init:
        init_from(net, cfg.init, ds.labels)
    ckpt_path = out / "checkpoint.pt"
    ck = _load_resume(cfg, ckpt_path, world, device)
    if cfg.float64:
        amp = Amp("off", "--float64")
    elif ck is not None and cfg.amp == "auto" and ck.get("amp") in ("bf16", "fp16", "off"):
        amp = Amp(ck["amp"], "the resumed run's")
    else:
        amp = resolve_amp(cfg.amp, device, probe=probe_step(net, cfg.frames, input_hw(cfg.size))
                          if device.type == "cpu" else None)
    if world.distributed and dist.all_min(int(amp.mode != "off"), device) == 0 and amp.mode != "off":
        amp = Amp("off", "another process has no native bf16")   # one precision for all processes
    if world.distributed and cfg.sync_bn:
        dist.global_batch_norm(net)
    net = net.to(device, dtype=torch.float64 if cfg.float64 else None,
                 memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    scaler = amp.scaler(device)
    start_epoch, step, history = 0, 0, []
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start_epoch, step, history = ck["epoch"], ck["step"], ck.get("history", [])
        torch.set_rng_state(ck["torch_rng"])
        logger.info("resumed from %s at epoch %d, step %d", ckpt_path, start_epoch, step)
    model: torch.nn.Module = net
    if world.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    workers = cfg.workers if cfg.workers is not None else default_workers(device, world.local_size, cfg.threads)
    aug = ClipAugment(input_hw(cfg.size), ds.labels, resize="stretch")
    clips = ClipDataset(src, aug, cfg.frames, cfg.stride, cfg.seed)
    if ds.recordings:
        logger.info("%d recordings: %d windows labelled frame by frame per epoch", len(ds.recordings),
                    len(clips.windows))
    sampler = StepSampler(len(clips), cfg.batch, cfg.seed, world.rank, world.size)
    loader = make_loader(clips, sampler, workers, pin=device.type == "cuda")
    steps_per_epoch = sampler.steps()
    total = steps_per_epoch * cfg.epochs          # the schedule's length
    stop_at = min(total, cfg.max_steps) if cfg.max_steps else total
    run = {"world_size": world.size, "device": str(device), "amp": amp.mode, "amp_reason": amp.reason,
           "workers": workers, "batch_per_process": cfg.batch // world.size, "global_batch": cfg.batch,
           "threads": torch.get_num_threads()}
    if world.main:
        logger.info("device %s, amp %s (%s), %d process(es) x %d clips, %d loader workers, %d threads", device,
                    amp.mode, amp.reason, world.size, cfg.batch // world.size, workers, torch.get_num_threads())
    bar = _bar(stop_at, step) if progress and world.main else None
    skipped_names: set[str] = set()
    for epoch in range(start_epoch, cfg.epochs):
        if step >= stop_at:
            break
        t_epoch = time.perf_counter()
        model.train()
        sampler.set_epoch(epoch)
        stats = _run_epoch(model, loader, opt, scaler, amp, device, cfg, world, step, stop_at, total, bar,
                           skipped_names)
        step = stats.pop("step")
        seconds = time.perf_counter() - t_epoch
        seen, correct, loss_sum, skipped = dist.all_sum(
            [stats["seen"], stats["correct"], stats["loss_sum"], stats["skipped"]], device)
        history.append({"epoch": epoch + 1, "step": step, "loss": loss_sum / max(1, seen),
                        "train_acc": correct / max(1, seen), "seconds": round(seconds, 1),
                        "clips_per_s": round(seen / max(seconds, 1e-9), 2), "skipped": int(skipped)})
        if world.main:
            h = history[-1]
            line = (f"epoch {epoch + 1}/{cfg.epochs}: loss {h['loss']:.4f}, train acc {h['train_acc']:.3f}, "
                    f"{h['clips_per_s']:.1f} clips/s, {seconds:.0f} s" + (f", {int(skipped)} clips skipped"
                                                                         if skipped else ""))
            if bar is not None:
                bar.write(line, file=sys.stderr)
            else:
                logger.info("%s", line)
            # serialized in memory, then replaced at once: a kill mid-write leaves the previous epoch's checkpoint
            buf = io.BytesIO()
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                        "history": history, "torch_rng": torch.get_rng_state(), "amp": amp.mode,
                        "scaler": scaler.state_dict() if scaler is not None else None, "run": run,
                        "meta": checkpoint_meta(cfg, ds.labels, fps), "config": asdict(cfg)}, buf)
            atomic_write(ckpt_path, buf.getvalue(), mode=0o644)
        dist.barrier()
    if bar is not None:
        bar.close()
    del loader   # its worker processes end here
    if not world.main:
        dist.barrier()   # rank 0 evaluates and exports
        return out
    try:
        _finish(cfg, net, ds.labels, fps, out, history, run, device)
    finally:
        dist.barrier()
    return out


def _bar(total: int, initial: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)


def _load_resume(cfg: TrainConfig, path: Path, world: dist.World, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to resume from (every process reads it), or None."""
    if not cfg.resume:
        return None
    have = int(dist.all_sum([float(path.is_file())], device)[0])
    if have and have < world.size:
        raise InputError(f"--resume: {path} is there for {have} of {world.size} processes; under multi-node torchrun "
                         "put --out on a file system every node shares")
    if not have:
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def _run_epoch(model, loader, opt, scaler, amp: Amp, device: torch.device, cfg: TrainConfig, world: dist.World,
               step: int, stop_at: int, total: int, bar: Any, skipped_names: set[str]) -> dict[str, Any]:
    """One epoch's steps (or until ``stop_at``); returns the local sums and the step reached."""
    seen = correct = skipped = 0
    loss_sum = 0.0
    t0 = time.perf_counter()
    it = iter(loader)
    while step < stop_at:
        try:
            batch = next(it)
        except StopIteration:
            break
        except RuntimeError as e:   # a worker killed (out of memory, a crashing decoder)
            if "DataLoader worker" not in str(e):
                raise
            raise DataError(f"a loader worker died ({' '.join(str(e).split())[:200]}); run with --workers 0 to see "
                            "which clip fails (a script that calls train() itself needs the if __name__ == "
                            "'__main__': guard: workers start from a fork server)") from None
        for msg in batch.skipped:
            skipped += 1
            if msg not in skipped_names:
                skipped_names.add(msg)
                logger.warning("skipped: %s", msg)
        n_local = len(batch.y)
        n_global = int(dist.all_sum([float(n_local)], device)[0]) if world.distributed else n_local
        if n_global == 0:
            step += 1   # every clip of the step failed: the schedule moves on, the weights do not
            continue
        x, y, fy = batch.x, batch.y, batch.frame_y
        weight = torch.ones(n_local)
        if n_local == 0:   # this process's clips all failed, the others' did not: join with a zero-weight clip
            x = torch.zeros(1, cfg.frames, 3, *input_hw(cfg.size), dtype=torch.uint8)
            y, weight, fy = torch.zeros(1, dtype=torch.long), torch.zeros(1), None
        x = normalize(x.to(device, non_blocking=True))
        x = x.double() if cfg.float64 else x
        y, weight = y.to(device, non_blocking=True), weight.to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg.lr, cfg.warmup)
        with amp.autocast(device):
            frame_logits = model(x)
        frame_logits = frame_logits if frame_logits.dtype == torch.float64 else frame_logits.float()
        logits = frame_logits.mean(1)
        ce = F.cross_entropy(logits, y, reduction="none", label_smoothing=cfg.label_smoothing,
                             ignore_index=IGNORE)
        hit = (logits.argmax(1) == y).float()
        if fy is not None:   # windows of recordings: the mean loss over their scored frames
            fy = fy.to(device, non_blocking=True)
            n_t = frame_logits.shape[1]
            per = F.cross_entropy(frame_logits.reshape(-1, frame_logits.shape[-1]), fy.reshape(-1), reduction="none",
                                  label_smoothing=cfg.label_smoothing, ignore_index=IGNORE).view(-1, n_t)
            scored = (fy != IGNORE).float()
            win = y == IGNORE
            ce = torch.where(win, (per * scored).sum(1) / scored.sum(1).clamp(min=1), ce)
            hit = torch.where(win, ((frame_logits.argmax(2) == fy).float() * scored).sum(1)
                              / scored.sum(1).clamp(min=1), hit)
        # DDP averages gradients over the processes: scaling by size/n_global makes that the global batch mean.
        loss = (ce * weight).sum() * (world.size / n_global)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        step += 1
        seen += n_local
        correct += float((hit * weight).sum())
        loss_sum += float((ce.detach() * weight).sum())
        if bar is not None:
            bar.update(1)
            rate = seen * world.size / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"loss {loss_sum / max(1, seen):.3f}, {rate:.1f} clips/s", refresh=False)
    return {"step": step, "seen": seen, "correct": correct, "loss_sum": loss_sum, "skipped": skipped}


def _finish(cfg: TrainConfig, net: TSMNet, labels: list[str], fps: float, out: Path, history: list[dict[str, Any]],
            run: dict[str, Any], device: torch.device) -> None:
    """Rank 0: validate, write weights.pt (fp16), export the FP32 bundle and train.json."""
    net = dist.local_batch_norm(net).float().to(memory_format=torch.contiguous_format).eval()
    metrics: dict[str, Any] = {"train": history[-1] if history else {}}
    offsets = train_offsets(cfg, labels)
    graph = with_offsets(net, offsets)   # what model.onnx computes; weights.pt keeps the trained bias
    if cfg.val:
        vsrc = ClipSource(load_dataset(cfg.val, labels=labels), cache_budget_gb(cfg.cache_gb, 1))
        metrics["val"] = validate(graph, vsrc, cfg.size, cfg.stride, device)
        logger.info("validation (%s): accuracy %.4f", cfg.val, metrics["val"]["accuracy"])
    net, graph = net.to("cpu"), graph.to("cpu")
    meta = {**checkpoint_meta(cfg, labels, fps), **({"prior_offsets": offsets} if offsets else {})}
    # weights.pt: the torch weights for fine-tuning (--init), in float16 to halve the bundle's size.
    half = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"model": half, "meta": meta}, out / "weights.pt")
    prov = {**meta["provenance"], **({"prior_offsets": dict(zip(labels, offsets, strict=True))} if offsets else {})}
    prov["metrics"] = metrics
    export_bundle(graph, out, labels, size=input_hw(cfg.size), name=cfg.name or out.name, fps=fps,
                  frame_stride=cfg.stride, clip_frames=cfg.frames, resize="stretch", provenance=prov)
    (out / "train.json").write_text(json.dumps({"config": asdict(cfg), **run, "history": history, "metrics": metrics,
                                                "seconds": round(sum(h.get("seconds", 0.0) for h in history), 1)},
                                               indent=1), encoding="utf-8")


def checkpoint_meta(cfg: TrainConfig, labels: list[str], fps: float) -> dict[str, Any]:
    return {"layout": "edge", "labels": list(labels), "width": cfg.width, "shift": cfg.shift,
            "size": list(input_hw(cfg.size)), "crop_scale": 1.0, "resize": "stretch", "fps": fps,
            "frame_stride": cfg.stride,
            "clip_frames": cfg.frames, "name": cfg.name,
            "provenance": {"data": str(cfg.data), "seed": cfg.seed, "epochs": cfg.epochs, "shift": cfg.shift,
                           **synth_provenance(cfg.data), **cfg.provenance}}
