"""Data-parallel training under torchrun (gloo on CPU, nccl on GPUs), or a no-op single process.

Gradients are averaged across ranks after each backward and BatchNorm buffers are broadcast from
rank 0 after each step, which is what DistributedDataParallel does; doing it in the loop keeps
one code path for every stage's closure. Each rank draws a disjoint shard of every epoch.
Only rank 0 writes checkpoints, caches and reports; the others wait at barriers.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_env(device: str) -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device == "cuda":  # one GPU per process: the one torchrun's LOCAL_RANK names
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def local_device(device: str) -> str:
    """``cuda`` means this process's GPU under torchrun (``cuda:LOCAL_RANK``); anything else as given."""
    if device == "cuda" and world_size() > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def main_first(fn):
    """Run ``fn`` on rank 0, then on the others: rank 0 builds a shared cache, the rest load it."""
    if is_main():
        result = fn()
        barrier()
        return result
    barrier()
    return fn()


def average_gradients(params) -> None:
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size()


def sync_from_main(modules: dict[str, nn.Module], buffers_only: bool = False) -> None:
    """Make every rank hold rank 0's parameters (at stage start) or buffers (after each step)."""
    if world_size() == 1:
        return
    for module in modules.values():
        tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
        for t in tensors:
            if t.is_floating_point() or not buffers_only:
                dist.broadcast(t, src=0)
