"""Process setup and ``deepspeed.initialize`` with errors turned into one-line messages."""
from __future__ import annotations

import os
import socket
from typing import Any

import torch

from ..errors import GnnZeroError


def device_type() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (decided before DeepSpeed starts)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(local_rank: int) -> tuple[int, int, torch.device]:
    """Start (or join) the process group the deepspeed launcher set up; return rank, world, device."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:  # plain `python launch/train.py`: a world of one
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT") or str(_free_port())})
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", max(local_rank, 0)))
    if device_type() == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return rank, world, device


def initialize_engine(model: torch.nn.Module, config: dict[str, Any]):
    """``deepspeed.initialize`` on ``model``; a config DeepSpeed rejects becomes one line."""
    import deepspeed

    try:
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=config)
    except Exception as exc:  # pydantic ValidationError, AssertionError, ValueError ...
        text = " ".join(str(exc).split())
        if type(exc).__name__ == "ValidationError" or isinstance(exc, (AssertionError, ValueError)):
            raise GnnZeroError(f"DeepSpeed rejected the config: {text[:300]}; fix the ds_config "
                               f"file or the override flags") from exc
        raise
    return engine, optimizer, scheduler


def compute_dtype(engine) -> torch.dtype:
    if engine.fp16_enabled():
        return torch.float16
    if engine.bfloat16_enabled():
        return torch.bfloat16
    return torch.float32


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def parameter_fingerprint(engine) -> dict[str, float]:
    """Sum and sum of squares of all (gathered) parameters, in float64: equal on every rank
    when the data-parallel replicas agree.  Under ZeRO-3 the partitions are gathered first."""
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        total = sum(float(p.detach().double().sum()) for p in params)
        squares = sum(float(p.detach().double().pow(2).sum()) for p in params)
    return {"sum": total, "sum_sq": squares}
