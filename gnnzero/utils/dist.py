"""Every ``torch.distributed`` collective the package uses, placed where the backend needs it.

NCCL only moves CUDA tensors and gloo only host tensors (for gathers), yet the
package's collectives carry host values (losses, confusion counts, flags) as
often as device ones.  Each helper here moves its tensor to the device the
process group's backend takes (:func:`collective_device`), runs the collective
and hands the result back where the input was, so callers never say where a
collective runs.  A mixed group such as ``cpu:gloo,cuda:nccl`` takes each tensor
where it is.  Outside a process group every helper is a local no-op; inside one,
a world of one included, the collective really runs (it costs microseconds, and
a one-GPU machine can then test the NCCL placement).  ``tests/test_collectives.py`` fails if any other module calls a
collective itself.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

# Which device type each single-device backend's collectives accept.
BACKEND_DEVICE_TYPE = {"nccl": "cuda", "gloo": "cpu", "mpi": "cpu", "ccl": "cpu"}

REDUCE_OPS = ("sum", "max", "min")


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if _grouped():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def collective_device(backend: str, tensor_device: torch.device,
                      cuda_index: Optional[int] = None) -> torch.device:
    """Where a collective on a tensor living on ``tensor_device`` must run under ``backend``.

    ``backend`` is what ``torch.distributed.get_backend()`` returns: ``nccl``,
    ``gloo``, or a per-device list such as ``cpu:gloo,cuda:nccl``.  ``cuda_index`` is
    this process's CUDA device (``torch.cuda.current_device()``) for NCCL.
    """
    backend = backend.lower()
    if ":" in backend:  # "cpu:gloo,cuda:nccl": the tensor's own device type has a backend
        served = {part.split(":")[0].strip() for part in backend.split(",")}
        if tensor_device.type in served:
            return tensor_device
        backend = backend.split(",")[0].split(":")[1].strip()
    wanted = BACKEND_DEVICE_TYPE.get(backend, tensor_device.type)
    if wanted == tensor_device.type:
        return tensor_device
    if wanted == "cuda":
        return torch.device("cuda", cuda_index if cuda_index is not None else 0)
    return torch.device(wanted)


def _grouped() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _device_for(tensor: torch.Tensor) -> torch.device:
    backend = str(torch.distributed.get_backend())
    cuda_index = torch.cuda.current_device() if "nccl" in backend.lower() else None
    return collective_device(backend, tensor.device, cuda_index)


def _reduce_op(op: str):
    if op not in REDUCE_OPS:
        raise ValueError(f"reduce op {op!r}: use one of {', '.join(REDUCE_OPS)}")
    return {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX,
            "min": torch.distributed.ReduceOp.MIN}[op]


def all_reduce_tensor(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced element-wise over all ranks, returned where ``tensor`` was
    (``tensor`` itself is not changed)."""
    if not _grouped():
        return tensor
    moved = tensor.to(_device_for(tensor), copy=True)
    torch.distributed.all_reduce(moved, op=_reduce_op(op))
    return moved.to(tensor.device)


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """``values`` reduced element-wise over all ranks (``op``: sum, max or min), in float64."""
    return all_reduce_tensor(torch.tensor(values, dtype=torch.float64), op).tolist()


def all_gather_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape on all ranks), in rank order, where ``tensor`` was."""
    if not _grouped():
        return [tensor]
    world = rank_world()[1]
    moved = tensor.to(_device_for(tensor))
    out = [torch.empty_like(moved) for _ in range(world)]
    torch.distributed.all_gather(out, moved)
    return [o.to(tensor.device) for o in out]


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (pickled; under NCCL torch stages the bytes on
    the current CUDA device, which :func:`gnnzero.engine.runtime.init_distributed` sets)."""
    if not _grouped():
        return [obj]
    out: list[Any] = [None] * rank_world()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if _grouped():
        torch.distributed.barrier()
