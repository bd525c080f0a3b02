"""Data-parallel training under torchrun: every line of DistributedDataParallel (DDP) lives here.

Introduced in docs/distributed.md (the notebooks run one process). ``train.run_training`` calls these helpers on the
lines it marks ``# DDP``; in a single process each of them is a no-op or the identity, so the loop reads the same
without torchrun. As in nanoGPT, only the master process (rank 0) writes files, and the loop says so with an
explicit ``if master:``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``rank`` of ``world`` processes on ``device``; ``master`` is rank 0.

    ``created`` says :func:`setup` initialised the process group, so :func:`teardown` destroys it.
    """

    device: torch.device
    rank: int = 0
    world: int = 1
    created: bool = False

    @property
    def master(self) -> bool:
        """True in a single process and on rank 0: the only process that writes run_dir files."""
        return self.rank == 0


def is_master() -> bool:
    """True without a process group and on its rank 0. Introduced in docs/distributed.md."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def setup(device: torch.device) -> Distributed:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs.

    Introduced in docs/distributed.md. Each process takes the GPU ``LOCAL_RANK``.

    Args:
        device: the device the run resolved to.

    Returns:
        A :class:`Distributed`; ``Distributed(device)`` (rank 0 of 1) without torchrun.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(device, dist.get_rank(), dist.get_world_size(), created)


def teardown(ddp: Distributed) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ddp.created:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ddp: Distributed) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when world > 1; on GPUs batch norm becomes SyncBatchNorm (GPU-only)."""
    if ddp.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if ddp.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None)


def reduce(values: list[float], ddp: Distributed, op: str = "sum") -> list[float]:
    """Sum (op="sum"), maximum ("max") or minimum ("min") of numbers over all processes; unchanged in one process."""
    if ddp.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ddp.device)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(t, op=ops[op])
    return t.tolist()


def mean_over_processes(value: float, ddp: Distributed) -> float:
    """The mean of one number over all processes (each ran the same number of steps)."""
    return reduce([value], ddp)[0] / ddp.world


def broadcast(obj: Any, ddp: Distributed) -> Any:
    """Rank 0's ``obj`` in every process (a picklable value), e.g. a timing-based decision that must agree."""
    if ddp.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(net: torch.nn.Module, ddp: Distributed) -> None:
    """Batch-norm running statistics differ per process after an epoch: keep rank 0's, as DDP does."""
    if ddp.world == 1:
        return
    for buf in net.buffers():
        dist.broadcast(buf, src=0)


def train_sampler(dataset: Any, ddp: Distributed, seed: int) -> Any:
    """A DistributedSampler giving each process a disjoint share of every epoch; None in a single process."""
    if ddp.world == 1:
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=ddp.world, rank=ddp.rank, seed=seed)


def shard(dataset: Any, ddp: Distributed) -> Any:
    """This process's share of the validation cases (every ``world``-th, from ``rank``); the dataset itself alone."""
    if ddp.world == 1:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(ddp.rank, len(dataset), ddp.world))
