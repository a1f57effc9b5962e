"""Training on several processes with PyTorch's own engine: ``torch.distributed``, launched by ``torchrun``.

One process (plain ``python -m cxrlib train ...``) is the default and is unchanged: :func:`context` then reports
``world == 1`` and nothing here does anything. Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address) :func:`context` joins the process group once, with the ``nccl``
backend when CUDA is available and ``gloo`` otherwise, and gives each process its device (``cuda:LOCAL_RANK``).

How the methods use it (the rules a reader of a multi-process run needs):

* **Global batch.** ``batch_size`` in a config is the *global* batch: each of the ``W`` processes takes a
  contiguous ``batch_size / W`` slice of it (:func:`rank_slice`). Every process draws the same global order and
  augmentation from the run's seed, so the images seen per step are those of the one-process run; gradients are
  averaged by ``DistributedDataParallel``, so the learning rate needs no rescaling.
* **Per-rank seeds.** Randomness inside the model (the in-painting mask) is seeded with ``seed`` and the rank,
  so processes do not draw the same masks for different images; rank 0 draws what one process draws.
* **BatchNorm.** On CUDA it is converted to ``SyncBatchNorm`` (statistics of the global batch, as one process
  computes them). On CPU PyTorch has no ``SyncBatchNorm``: each process normalises with its local slice, so a
  multi-process CPU run is close to, not identical with, the one-process run (the test states how close).
* **Rank 0 alone** logs, validates and writes checkpoints (atomically); the others wait at a barrier and every
  rank resumes from the same ``last.pt``.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

__all__ = ["DistContext", "context", "launched", "local_device", "shard_bounds", "gather_shards", "rank_slice", "all_gather_rows", "barrier", "broadcast_object",
           "wrap_ddp", "shutdown", "unwrap"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node, ``backend``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, validates and writes."""
        return self.rank == 0


def launched() -> bool:
    """True under ``torchrun`` with more than one process (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context() -> DistContext:
    """This process's :class:`DistContext`, joining the process group on first use under ``torchrun``."""
    if not launched():
        return DistContext()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # rank 0 may work alone for long (ASR-Net, a coreset, scoring statistics) while the others wait at the
        # closing barrier of shutdown(); a failed rank still ends the run at once, since torchrun stops them all
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                       dist.get_backend())


def local_device(device, ctx: DistContext):
    """``device``, or under ``torchrun`` on CUDA this process's GPU (``cuda:LOCAL_RANK``)."""
    import torch

    device = torch.device(device)
    return torch.device("cuda", ctx.local_rank) if ctx.enabled and device.type == "cuda" else device


def gather_shards(shard, n_total: int):
    """The per-rank contiguous shards of an ``(n_total, ...)`` tensor (from :func:`shard_bounds`), concatenated
    in rank order on every rank. Shards may differ in length by one; they are padded for ``all_gather``."""
    import torch

    world = _world_size()
    if world == 1:
        return shard
    bounds = shard_bounds(n_total, world)
    longest = max(bounds[r + 1] - bounds[r] for r in range(world))
    pad = torch.zeros((longest, *shard.shape[1:]), dtype=shard.dtype, device=shard.device)
    pad[:len(shard)] = shard
    parts = all_gather_rows(pad, dim=0).split(longest)
    return torch.cat([parts[r][:bounds[r + 1] - bounds[r]] for r in range(world)])


def shard_bounds(n: int, world: int) -> list[int]:
    """``world + 1`` boundaries splitting ``range(n)`` into contiguous shards whose lengths differ by at most 1."""
    return [n * r // world for r in range(world + 1)]


def rank_slice(n: int, ctx: DistContext) -> slice:
    """The contiguous part of a global batch of ``n`` that rank ``ctx.rank`` takes; ``n`` must divide evenly."""
    if n % ctx.world:
        raise ValueError(f"batch size {n} does not divide among {ctx.world} processes")
    b = n // ctx.world
    return slice(ctx.rank * b, (ctx.rank + 1) * b)


def all_gather_rows(t, dim: int = -2):
    """Concatenate ``t`` from every rank along ``dim``, in rank order (so rank slices come back as the global
    batch); ``t`` itself when there is one process. Every rank must call it with the same shape."""
    import torch
    import torch.distributed as dist

    world = _world_size()
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def _world_size() -> int:
    """The process group's size, 1 when there is none (collectives then have nothing to do)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(value, ctx: DistContext):
    """Rank 0's ``value`` (any picklable object) on every rank, e.g. a folder only rank 0 created."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(module, ctx: DistContext, device):
    """``module`` wrapped in ``DistributedDataParallel`` (BatchNorm synchronised on CUDA); unchanged for one
    process."""
    if not ctx.enabled:
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[device.index])
    return DistributedDataParallel(module)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group, after a barrier: a rank that tears its connections down while rank 0 still uses
    the group (finalising alone) can abort ("terminate called without an active exception")."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def unwrap(module):
    """The network inside a ``DistributedDataParallel`` wrapper (or the network itself)."""
    return getattr(module, "module", module)
