"""Collectives: only ``gnnzero/utils/dist.py`` calls them, and it places every tensor where
the process group's backend takes it.

* A scan of every module (package, launcher, benchmarks, test workers) fails on any
  direct ``torch.distributed`` / ``deepspeed.comm`` collective outside dist.py.
* :func:`collective_device` is checked against each backend's rule (NCCL: CUDA
  tensors only; gloo: host tensors; ``cpu:gloo,cuda:nccl``: each where it is).
* Every helper, in a real gloo world of one, hands torch.distributed a tensor on
  that device and returns its result where the input was, with the right values.
* On a CUDA machine (``benchmarks/gpu_check.sh`` runs this file there), the same
  helpers run under a real NCCL group with host and device inputs, beside a control
  showing that a host tensor handed to NCCL directly fails.
"""
from __future__ import annotations

import ast
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from gnnzero.utils import dist
from tests.helpers import REPO, world_of_one_process_group

COLLECTIVES = {
    "all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor",
    "_all_gather_base", "reduce_scatter", "reduce_scatter_tensor", "_reduce_scatter_base",
    "broadcast", "broadcast_object_list", "reduce", "gather", "gather_object", "scatter",
    "scatter_object_list", "all_to_all", "all_to_all_single", "barrier", "monitored_barrier",
    "send", "recv", "isend", "irecv", "batch_isend_irecv", "inference_all_reduce",
}
COMM_MODULES = {"torch.distributed", "deepspeed.comm"}
SCANNED = ("gnnzero", "launch", "benchmarks", "tests")
ALLOWED = {Path("gnnzero/utils/dist.py"),
           Path("tests/test_collectives.py")}  # its NCCL control calls one directly


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def direct_collectives(source: str) -> list[tuple[int, str]]:
    """(line, call) of every collective called on torch.distributed / deepspeed.comm, by its
    full name, through an ``import ... as`` alias, or imported by name."""
    tree = ast.parse(source)
    modules, functions = set(COMM_MODULES), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in COMM_MODULES and alias.asname:
                    modules.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in COMM_MODULES:
                    modules.add(alias.asname or alias.name)
                elif node.module in COMM_MODULES and alias.name in COLLECTIVES:
                    functions.add(alias.asname or alias.name)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in COLLECTIVES \
                and _dotted(func.value) in modules:
            found.append((node.lineno, _dotted(func)))
        elif isinstance(func, ast.Name) and func.id in functions:
            found.append((node.lineno, func.id))
    return found


def test_the_scan_finds_every_spelling_of_a_collective():
    source = """
import torch
import torch.distributed as tdist
from torch import distributed
from torch.distributed import all_gather as gather_all
from deepspeed import comm
torch.distributed.all_reduce(x)
tdist.barrier()
distributed.broadcast(x, 0)
gather_all(out, x)
comm.all_gather_object(out, x)
torch.distributed.get_rank()        # not a collective
"""
    assert [name for _, name in direct_collectives(source)] == [
        "torch.distributed.all_reduce", "tdist.barrier", "distributed.broadcast", "gather_all",
        "comm.all_gather_object"]


def test_no_module_but_dist_py_calls_a_collective():
    offenders = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            relative = path.relative_to(REPO)
            if relative in ALLOWED:
                continue
            for line, name in direct_collectives(path.read_text(encoding="utf-8")):
                offenders.append(f"{relative}:{line}: {name}")
    assert not offenders, ("call these through gnnzero/utils/dist.py, which places the "
                           "tensors for the backend:\n" + "\n".join(offenders))


# ------------------------------------------------------------------------ placement rules

CPU, CUDA0, CUDA1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)


@pytest.mark.parametrize("backend, tensor_device, cuda_index, expected", [
    ("nccl", CPU, 1, CUDA1),                 # a host tensor goes to this rank's GPU
    ("nccl", CUDA0, 0, CUDA0),
    ("NCCL", CPU, 0, CUDA0),
    ("gloo", CUDA0, None, CPU),              # gloo gathers host tensors only
    ("gloo", CPU, None, CPU),
    ("cpu:gloo,cuda:nccl", CPU, 0, CPU),     # a mixed group takes each tensor where it is
    ("cpu:gloo,cuda:nccl", CUDA1, 1, CUDA1),
    ("cuda:nccl", CPU, 1, CUDA1),            # only CUDA served: host tensors move
    ("cpu:gloo", CUDA0, None, CPU),
    ("mpi", CUDA0, None, CPU),
])
def test_collective_device_follows_the_backend(backend, tensor_device, cuda_index, expected):
    assert dist.collective_device(backend, tensor_device, cuda_index) == expected


def test_helpers_are_local_without_a_process_group(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    x = torch.arange(3.0)
    assert dist.all_reduce([1.0, 2.0]) == [1.0, 2.0]
    assert dist.all_reduce_tensor(x) is x
    assert dist.all_gather_tensor(x)[0] is x
    assert dist.gather_objects({"a": 1}) == [{"a": 1}]
    assert dist.rank_world() == (0, 1)
    dist.barrier()


@contextmanager
def recording_collectives(monkeypatch):
    """Wrap torch.distributed's collectives to record the device of each tensor they get."""
    seen: list[tuple[str, torch.device]] = []
    for name in ("all_reduce", "all_gather"):
        real = getattr(torch.distributed, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            tensor = args[1] if _name == "all_gather" else args[0]
            seen.append((_name, tensor.device))
            return _real(*args, **kwargs)
        monkeypatch.setattr(torch.distributed, name, spy)
    yield seen


def check_every_helper(device: torch.device, expected: torch.device, seen) -> None:
    """Each helper on an input living on ``device``: the collective saw ``expected``, the
    result came back on ``device``, and the values are a world of one's."""
    x = torch.tensor([1.5, -2.0, 4.0], device=device)
    summed = dist.all_reduce_tensor(x)
    assert summed.device == device and torch.equal(summed.cpu(), x.cpu())
    assert summed is not x  # the input itself is left alone
    assert dist.all_reduce_tensor(x, "max").device == device
    assert dist.all_reduce([1.0, 3.0], "min") == [1.0, 3.0]
    gathered = dist.all_gather_tensor(x)
    assert len(gathered) == 1 and gathered[0].device == device
    assert torch.equal(gathered[0].cpu(), x.cpu())
    assert dist.gather_objects(("rank", 0)) == [("rank", 0)]
    dist.barrier()
    assert [name for name, _ in seen] == ["all_reduce", "all_reduce", "all_reduce", "all_gather"]
    # all_reduce(list) builds a host float64 tensor: it too goes where the backend wants.
    assert all(where == expected for _, where in seen), seen
    with pytest.raises(ValueError, match="reduce op 'mean'"):
        dist.all_reduce([1.0], "mean")


@pytest.fixture(scope="module")
def gloo_world_of_one():
    with world_of_one_process_group() as (_, _, device):
        assert torch.distributed.get_backend() == "gloo"
        yield device


def test_every_helper_under_gloo_runs_on_the_host(gloo_world_of_one, monkeypatch):
    with recording_collectives(monkeypatch) as seen:
        check_every_helper(torch.device("cpu"), torch.device("cpu"), seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (gpu_check.sh)")
def test_every_helper_under_nccl_moves_host_tensors_to_the_gpu(monkeypatch):
    import os

    torch.cuda.set_device(0)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    if torch.distributed.is_initialized():  # a gloo world of one from another test
        torch.distributed.destroy_process_group()
    torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    try:
        with pytest.raises(Exception):  # the control: NCCL refuses a host tensor
            torch.distributed.all_reduce(torch.ones(2))
            torch.cuda.synchronize()
        for device in (torch.device("cpu"), torch.device("cuda", 0)):
            with recording_collectives(monkeypatch) as seen:
                check_every_helper(device, torch.device("cuda", 0), seen)
            monkeypatch.undo()
    finally:
        torch.distributed.destroy_process_group()
