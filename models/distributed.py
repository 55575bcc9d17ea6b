"""``torchrun`` support for ``edge-tsm train``: the process group, rank 0's duties, global batch norm.

``torchrun --nproc_per_node N -m edge train ...`` (and multi-node through torchrun's rendezvous) sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them
and joins the group (NCCL on CUDA, gloo on the CPU). Without them the run is one process, as before.

Batch norm statistics are taken over the global batch (:class:`GlobalBatchNorm2d`, an all-reduce of
the per-channel sums that also works on the CPU with gloo, where ``torch.nn.SyncBatchNorm`` does not),
so the same command on 1 or N processes computes the same loss and gradients: N processes train the
model one process would, only faster.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from edge.errors import DeviceError, UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints, exports and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment {name}={raw!r}: not an integer (torchrun sets it)") from None


def world_from_env() -> World:
    """The torchrun environment, or one process when it is absent."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise UsageError(f"environment RANK={rank} WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE")
    return World(rank, size, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1))


def setup(device_type: str, timeout_s: float) -> World:
    """Join the process group when started by torchrun with more than one process (idempotent).

    Raises:
        DeviceError: torch.distributed is unavailable, or the rendezvous fails or times out.
    """
    w = world_from_env()
    if not w.distributed or (dist.is_available() and dist.is_initialized()):
        return w
    if not dist.is_available():
        raise DeviceError(f"WORLD_SIZE={w.size}: this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, rank=w.rank, world_size=w.size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        dist.barrier()  # every process is there before the first step (the store alone does not say so)
    except (RuntimeError, ValueError, OSError) as e:
        cause = " ".join(str(e).split())[:300]
        raise DeviceError(f"torch.distributed rendezvous at {where} failed (rank {w.rank} of {w.size}, backend "
                          f"{backend}, --dist-timeout {timeout_s:g} s): {cause}; start every process with the same "
                          "torchrun --nnodes/--nproc_per_node/--rdzv-endpoint and check the address is reachable") \
            from None
    logger.debug("rank %d of %d joined %s (%s)", w.rank, w.size, where, backend)
    return w


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all processes (a no-op for one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_min(value: int, device: torch.device) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient (the sum's derivative on every process)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all processes.

    Per-channel count and sum, then the sums of squared deviations from the global mean, are all-reduced
    (differentiably: the backward pass sums the statistics' gradients over the processes as well); in eval
    mode, or with one process, it is BatchNorm2d. Same parameters and buffers, so state dicts are interchangeable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _SumOverProcesses.apply
        c = x.shape[1]
        xf = x if x.dtype == torch.float64 else x.float()
        # Two passes (the mean, then the squared deviations from it), each summed over the processes: the
        # one-pass E[x^2] - E[x]^2 cancels badly where a channel is nearly constant (deep layers at 1x1).
        n_local = torch.full((1,), xf.numel() // c, dtype=xf.dtype, device=x.device)
        first = all_reduce(torch.cat((xf.sum(dim=(0, 2, 3)), n_local)))
        n = first[-1]
        mean = first[:c] / n
        var = all_reduce(((xf - mean.view(1, c, 1, 1)) ** 2).sum(dim=(0, 2, 3))) / n
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1.0)), alpha=m)
            self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps) * self.weight
        shift = self.bias - mean * scale
        return (xf * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)).to(x.dtype)


def global_batch_norm(net: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d in ``net`` for :class:`GlobalBatchNorm2d` in place (same weights)."""
    for name, child in list(net.named_children()):
        if type(child) is nn.BatchNorm2d:
            g = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(child.weight.device)
            g.load_state_dict(child.state_dict())
            setattr(net, name, g)
        else:
            global_batch_norm(child)
    return net


def local_batch_norm(net: nn.Module) -> nn.Module:
    """The inverse of :func:`global_batch_norm` (before export: plain BatchNorm2d modules)."""
    for name, child in list(net.named_children()):
        if isinstance(child, GlobalBatchNorm2d):
            b = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                               child.track_running_stats).to(child.weight.device)
            b.load_state_dict(child.state_dict())
            setattr(net, name, b)
        else:
            local_batch_norm(child)
    return net
