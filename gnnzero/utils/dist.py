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
