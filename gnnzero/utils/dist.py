"""The few torch.distributed collectives the package uses; each also works without a process group."""
from __future__ import annotations

from typing import Any

import torch


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """``values`` reduced element-wise over all ranks (``op``: ``sum`` or ``max``), in float64."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if rank_world()[1] > 1:
        reduce_op = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX}[op]
        torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.tolist()


def all_reduce_tensor(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` summed over all ranks; the collective runs on ``device`` (the backend's:
    NCCL needs CUDA tensors), the result comes back where ``tensor`` was."""
    if rank_world()[1] == 1:
        return tensor
    moved = tensor.to(device)
    torch.distributed.all_reduce(moved)
    return moved.to(tensor.device)


def all_gather_tensor(tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape on all ranks), in rank order, where ``tensor`` was."""
    world = rank_world()[1]
    if world == 1:
        return [tensor]
    moved = tensor.to(device)
    out = [torch.empty_like(moved) for _ in range(world)]
    torch.distributed.all_gather(out, moved)
    return [o.to(tensor.device) for o in out]


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order."""
    world = rank_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
