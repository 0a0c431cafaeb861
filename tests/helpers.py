"""Helpers the tests import as ``from tests.helpers import ...``: the repository root, the
DeepSpeed / ``launch/train.py`` launchers, and the checks shared by several test modules.

Fixtures live in ``tests/conftest.py``; this module holds plain functions only.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
# GNNZERO_PLANETOID_ROOT points the tests at the raw files from a clone elsewhere.
SHARED_DATA = Path(os.environ.get("GNNZERO_PLANETOID_ROOT",
                                  REPO.parent / "shared" / "data" / "planetoid"))


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a process a test starts: this interpreter's bin/ first on PATH
    (``deepspeed``, ``ninja``) and the repository root on PYTHONPATH, so a script under
    tests/ that the launcher runs imports ``tests.…`` exactly as pytest does."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_deepspeed(script: str, args: list[str], num_procs: int = 1, timeout: int = 600,
                  cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``deepspeed --num_gpus N script args`` (CPU/gloo) and return the finished process."""
    env = subprocess_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [_bin("deepspeed"), "--num_gpus", str(num_procs),
           "--master_port", str(29500 + (os.getpid() % 400)), script, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_torchrun(script: str, args: list[str], num_procs: int = 2, timeout: int = 600,
                 cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node N script args`` (CPU/gloo: DDP users' launcher)."""
    env = subprocess_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [_bin("torchrun"), "--nproc_per_node", str(num_procs), "--master_port",
           str(29900 + (os.getpid() % 90)), script, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_train(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``python launch/train.py args`` in a subprocess (one process, no launcher)."""
    return subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def plain_data_parallel(args: list[str], ds_config: dict, batch_loss, world: int = 2) -> dict:
    """What a DeepSpeed run of ``args`` must reproduce, in plain PyTorch: the same config,
    dataset, rank loaders and initial weights (``run.setup`` seeds before ``build_model``);
    each step, every rank's batch through ``batch_loss(model, batch)``, the gradients averaged
    over ranks (DeepSpeed's data parallelism), the global norm clipped, ``torch.optim.AdamW``.
    Returns the mean loss over ranks per step, the gradient norms before clipping, and the
    initial and final parameters."""
    import torch

    from gnnzero.builder import build_dataset, build_loader, build_model
    from gnnzero.config import parse_config

    cfg = parse_config(args)
    dataset = build_dataset(cfg)
    loaders = [build_loader(cfg, dataset, rank, world) for rank in range(world)]
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, dataset).train()
    params = dict(model.named_parameters())
    initial = {name: p.detach().clone() for name, p in params.items()}
    opt = ds_config["optimizer"]
    assert opt["type"] == "AdamW"
    opt = opt["params"]
    optimizer = torch.optim.AdamW(params.values(), lr=opt["lr"], betas=tuple(opt["betas"]),
                                  eps=opt["eps"], weight_decay=opt["weight_decay"])
    clip = ds_config.get("gradient_clipping", 0.0)
    losses, norms = [], []
    for epoch in range(cfg.train.epochs):
        for batches in zip(*(loader.epoch(epoch) for loader in loaders), strict=True):
            summed = {name: torch.zeros_like(p) for name, p in params.items()}
            step_loss = 0.0
            for batch in batches:  # one per rank
                model.zero_grad(set_to_none=True)
                loss = batch_loss(model, batch)
                loss.backward()
                step_loss += loss.item() / world
                for name, p in params.items():
                    if p.grad is not None:   # unreached (to_hetero's unused last-layer
                        summed[name] += p.grad   # maps): zero, as in DeepSpeed's flat buffers
            for name, p in params.items():
                p.grad = summed[name] / world
            if clip:
                norms.append(float(torch.nn.utils.clip_grad_norm_(params.values(), clip)))
            optimizer.step()
            losses.append(step_loss)
    return {"losses": losses, "grad_norms": norms, "initial": initial,
            "params": {name: p.detach().clone() for name, p in params.items()}}


def read_metrics(output_dir: Path) -> dict:
    with open(output_dir / "metrics.json", encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=None)
def script_module(relative: str) -> ModuleType:
    """A script of the repository (``launch/train.py``, ``benchmarks/*.py``) loaded as a module."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_entry() -> ModuleType:
    """``launch/train.py`` loaded as a module (its ``main()`` called in-process)."""
    return script_module("launch/train.py")


def assert_one_line_error(proc, *needles: str) -> None:
    """Exit code 2, no traceback, one ``error:`` line on stderr holding every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@contextmanager
def world_of_one_process_group():
    """An in-process world of one (``init_distributed``'s (rank, world, device)); the
    rendezvous variables it sets are removed afterwards so later subprocesses
    (``launch/train.py``, the launcher) do not inherit this process's MASTER_PORT."""
    from gnnzero.engine.runtime import init_distributed

    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_SIZE")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield init_distributed(-1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
