"""Process setup and ``deepspeed.initialize`` with errors turned into one-line messages."""
from __future__ import annotations

import os
import socket
import sys
from typing import Any

import torch

from ..errors import GnnZeroError
from .single_rank import skip_single_rank_reductions
from .zero3_hooks import replace_fetch_hooks


def device_type() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (decided before DeepSpeed starts)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_interpreter_ninja() -> None:
    """Put this interpreter's ``bin/`` (and its ``ninja``) first on PATH for DeepSpeed's JIT ops.

    DeepSpeed JIT-builds CPU ops (the shared-memory all-reduce at start-up,
    ``DeepSpeedCPUAdam`` for offload) with the first ``ninja`` on PATH, into a
    build folder shared by every process of the user.  pip's ninja (1.13) and
    apt's (1.11) hash build commands differently, so processes started with and
    without ``.venv/bin`` on PATH each see the other's build as stale and rebuild
    it (1-2 minutes on a small CPU, under a lock that every rank waits on).
    """
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if os.path.isfile(os.path.join(bindir, "ninja")) and path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + path


def skip_shared_memory_allreduce_op() -> None:
    """Stop DeepSpeed's CPU backend from JIT-building its shared-memory all-reduce op.

    ``TorchBackend`` builds it at every process start, but only
    ``inference_all_reduce`` uses it; training collectives go through
    ``torch.distributed`` (gloo) either way.  Skipping it removes a C++ compile
    (1-2 minutes on 2 cores, serialised by a lock file that a killed process
    leaves behind, hanging every later start) from each fresh machine.
    """
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def init_distributed(local_rank: int) -> tuple[int, int, torch.device]:
    """Start (or join) the process group the deepspeed launcher set up; return rank, world, device."""
    use_interpreter_ninja()
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if device_type() == "cpu":
        skip_shared_memory_allreduce_op()

    if "RANK" not in os.environ:  # plain `python launch/train.py`: a world of one
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT") or str(_free_port())})
    # DeepSpeed's CPU accelerator counts local devices from LOCAL_SIZE (its launcher's name);
    # without it, each ZeRO-3 gradient reduction runs `numactl --hardware` in a subprocess.
    os.environ.setdefault("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1"))
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
    replace_fetch_hooks(engine)   # ZeRO-3, every parameter persistent (zero3_hooks.py)
    skip_single_rank_reductions(engine)   # ZeRO-0/1/2 on one rank (single_rank.py)
    return engine, optimizer, scheduler


def compute_dtype(engine) -> torch.dtype:
    if engine.fp16_enabled():
        return torch.float16
    if engine.bfloat16_enabled():
        return torch.bfloat16
    return torch.float32


def parameter_fingerprint(engine) -> dict[str, float]:
    """Sum and sum of squares of all (gathered) parameters, in float64: equal on every rank
    when the data-parallel replicas agree.  Under ZeRO-3 the partitions are gathered first."""
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        total = sum(float(p.detach().double().sum()) for p in params)
        squares = sum(float(p.detach().double().pow(2).sum()) for p in params)
    return {"sum": total, "sum_sq": squares}
