"""Data-parallel training across processes (torchrun), without wrapping the model in DDP.

Why not `DistributedDataParallel`: a model's phases update different submodules (a GAN's
discriminator phase backpropagates through the generator's output but steps only the
discriminator), and DDP's gradient hooks fire for every parameter that received a gradient in a
backward pass, tying reduction to module wrapping and `find_unused_parameters`. Instead, after
each phase's backward the trainer averages exactly that phase's gradients with a few flattened
all-reduces (`reduce_gradients`). Same maths as DDP, explicit, and independent of the phase layout.

BatchNorm statistics are per rank (each rank normalises its own shard of the batch), so a BN
model's multi-process run is close to, not identical with, a single-process run of the same
global batch; convert to SyncBatchNorm in the model if that matters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

BUCKET_BYTES = 32 << 20


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistContext:
    """The process group described by torchrun's environment variables (none: one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: DistContext, device: torch.device) -> None:
    import torch.distributed as dist

    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def shutdown(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


@torch.no_grad()
def broadcast_module(ctx: DistContext, module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    tensors = [t for t in list(module.parameters()) + list(module.buffers())]
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src=0)
        _unflatten_into(flat, bucket)


@torch.no_grad()
def reduce_gradients(ctx: DistContext, params: list[nn.Parameter]) -> None:
    """Average the gradients of `params` over ranks, in flattened buckets."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    # the same code runs on every rank, so the same parameters have gradients everywhere
    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat.div_(ctx.world_size)
        _unflatten_into(flat, bucket)


def all_reduce_mean(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world_size
    return values


def all_reduce_max(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def all_gather_json(ctx: DistContext, obj):
    """Every rank's JSON-able `obj`, in rank order (RNG states for checkpoints)."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        # one dtype per bucket: torch.cat would silently promote
        if (
            not buckets
            or size + t.numel() * t.element_size() > BUCKET_BYTES
            or buckets[-1][0].dtype != t.dtype
        ):
            buckets.append([])
            size = 0
        buckets[-1].append(t)
        size += t.numel() * t.element_size()
    return buckets


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n
