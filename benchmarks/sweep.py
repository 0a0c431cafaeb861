"""Benchmark configurations, their `deepspeed` / baseline launches, and one record per rank.

A configuration is (ZeRO stage, precision, world size, loader, model shape); each
runs in its own ``deepspeed --num_gpus W launch/train.py`` process, and each
distinct (loader, model) pair also runs once through ``benchmarks/baseline.py``
(plain PyG + torch.optim) on the same batches.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from gnnzero.config import LOADER_SPECIFIC
from gnnzero.data.options import DataConfig
from gnnzero.models.options import ModelConfig
from gnnzero.observe.metrics import test_figure, training_rate

REPO = Path(__file__).resolve().parents[1]
STAGES = ("0", "1", "2", "3", "3+offload")
PRECISIONS = ("fp32", "bf16", "fp16")
LOADERS = ("full", "cluster", "saint-rw", "neighbor")
MODELS = ("dense", "shared-lowrank")


@dataclass(frozen=True)
class BenchConfig:
    stage: str = "2"             # 0 | 1 | 2 | 3 | 3+offload
    precision: str = "fp32"
    world_size: int = 1
    loader: str = "cluster"
    model: str = "dense"         # dense | shared-lowrank
    checkpointing: bool = False  # activation checkpointing (recompute each layer in backward)

    @property
    def name(self) -> str:
        stage = self.stage.replace("+", "")
        name = f"z{stage}_{self.precision}_w{self.world_size}_{self.loader}_{self.model}"
        return name + ("_ckpt" if self.checkpointing else "")


_DATA, _MODEL = DataConfig(), ModelConfig()


@dataclass
class Workload:
    """What every configuration trains on: dataset, size, model width, epochs."""

    dataset: str = _DATA.dataset          # train.py's defaults unless a benchmark needs others
    data_root: Optional[str] = None
    num_nodes: int = _DATA.num_nodes
    avg_degree: Optional[float] = None    # none: train.py's default
    arch: str = _MODEL.arch
    hidden: int = _MODEL.hidden
    layers: int = 3
    lowrank_rank: int = 16
    epochs: int = 2
    batch_size: int = 1000       # neighbor seeds / SAINT walk roots per batch
    extra: tuple[str, ...] = ()  # any further train.py flags
    task: str = "node"           # node | link (launch/train.py --task)


def validate_choice(name: str, values: Iterable[str], allowed: Iterable[str]) -> list[str]:
    values, allowed = list(values), list(allowed)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"--{name} {','.join(bad)} is not one of {','.join(allowed)}")
    return values


def grid(stages, precisions, worlds, loaders, models, cuda: bool,
         checkpointing=("off",)) -> list[BenchConfig]:
    """The cross product, without fp16 where there is no CUDA (DeepSpeed has no CPU fp16)."""
    out = []
    for stage, precision, world, loader, model, ckpt in itertools.product(
            stages, precisions, worlds, loaders, models, checkpointing):
        if precision == "fp16" and not cuda:
            continue
        out.append(BenchConfig(stage, precision, int(world), loader, model, ckpt == "on"))
    return out


def train_flags(config: BenchConfig, work: Workload, output_dir: Path, cache_dir: Path) -> list[str]:
    """launch/train.py flags for ``config`` (also understood by benchmarks/baseline.py)."""
    stage = config.stage.split("+")[0]
    flags = ["--ds_config", f"ds_configs/zero{stage}.json", "--zero-stage", stage,
             "--precision", config.precision,
             "--offload", "optimizer+params" if config.stage == "3+offload" else "none",
             "--dataset", work.dataset, "--num-nodes", str(work.num_nodes),
             "--model", work.arch, "--hidden", str(work.hidden), "--layers", str(work.layers),
             "--loader", config.loader,
             "--epochs", str(work.epochs), "--eval-every", str(work.epochs),
             "--output-dir", str(output_dir), "--cache-dir", str(cache_dir), "--no-checkpoint"]
    if work.task != "node":
        flags += ["--task", work.task]
    if config.loader in LOADER_SPECIFIC["batch_size"]:
        flags += ["--batch-size", str(work.batch_size)]
    if work.data_root:
        flags += ["--data-root", work.data_root]
    if work.avg_degree is not None:
        flags += ["--avg-degree", str(work.avg_degree)]
    if config.model == "shared-lowrank":
        flags += ["--share-weights", "--rank", str(work.lowrank_rank)]
    if config.checkpointing:
        flags += ["--activation-checkpointing"]
    return flags + list(work.extra)


def free_port() -> int:
    """A TCP port nobody listens on now (each launch gets its own rendezvous port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def _deepspeed_bin() -> str:
    candidate = Path(sys.executable).parent / "deepspeed"
    return str(candidate) if candidate.exists() else "deepspeed"


def launch(cmd: list[str], log: Path, timeout: int, env: Optional[dict] = None) -> tuple[int, float]:
    """Run ``cmd`` from the repo root, output to ``log``; return (exit code, seconds)."""
    return launch_together([(cmd, log)], timeout, env)[0]


def launch_together(commands: list[tuple[list[str], Path]], timeout: int,
                    env: Optional[dict] = None) -> list[tuple[int, float]]:
    """Start every ``(cmd, log)`` at once from the repo root; wait for all (each within
    ``timeout`` seconds of the start); (exit code, seconds) of each, in order."""
    start = time.perf_counter()
    running = []
    for cmd, log in commands:
        handle = open(log, "w", encoding="utf-8")
        running.append((subprocess.Popen(cmd, cwd=REPO, env=env or _env(), stdout=handle,
                                         stderr=subprocess.STDOUT), handle))
    results = []
    for process, handle in running:
        try:
            code = process.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = 124
        handle.close()
        results.append((code, time.perf_counter() - start))
    return results


def config_command(config: BenchConfig, work: Workload, out: Path, port: int,
                   extra: tuple[str, ...] = ()) -> tuple[list[str], Path]:
    """The `deepspeed` launch of launch/train.py for ``config`` and its run folder."""
    run_dir = out / "runs" / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [_deepspeed_bin(), "--num_gpus", str(config.world_size), "--master_port", str(port),
           "launch/train.py", *train_flags(config, work, run_dir, out / "cache"), *extra]
    return cmd, run_dir


def baseline_command(config: BenchConfig, work: Workload, out: Path, port: int,
                     extra: tuple[str, ...] = ()) -> tuple[list[str], Path]:
    """benchmarks/baseline.py on ``config``'s model and batches (fp32; on
    ``config.world_size`` ranks under DDP, launched like DeepSpeed, when that is more than
    one) and its run folder."""
    world = config.world_size
    base = BenchConfig("0", "fp32", world, config.loader, config.model)
    suffix = f"_w{world}" if world > 1 else ""
    run_dir = out / "runs" / f"baseline_{config.loader}_{config.model}{suffix}"
    run_dir.mkdir(parents=True, exist_ok=True)
    flags = [*train_flags(base, work, run_dir, out / "cache"), *extra]
    cmd = ([_deepspeed_bin(), "--num_gpus", str(world), "--master_port", str(port),
            "benchmarks/baseline.py", *flags] if world > 1
           else [sys.executable, "benchmarks/baseline.py", *flags])
    return cmd, run_dir


def run_config(config: BenchConfig, work: Workload, out: Path, port: int,
               timeout: int) -> tuple[Optional[dict], str]:
    """One `deepspeed` launch of launch/train.py; (metrics or None, log path)."""
    cmd, run_dir = config_command(config, work, out, port)
    code, _ = launch(cmd, run_dir / "log.txt", timeout)
    return run_outcome(run_dir, code)


def run_baseline(config: BenchConfig, work: Workload, out: Path,
                 timeout: int) -> tuple[Optional[dict], str]:
    """:func:`baseline_command`, run; (metrics or None, log path)."""
    cmd, run_dir = baseline_command(config, work, out, free_port())
    code, _ = launch(cmd, run_dir / "log.txt", timeout)
    return run_outcome(run_dir, code)


def run_outcome(run_dir: Path, code: int) -> tuple[Optional[dict], str]:
    """(metrics or None, log path) of a launch that wrote its log to ``run_dir/log.txt``."""
    return read_metrics(run_dir, code), str(run_dir / "log.txt")


def read_metrics(run_dir: Path, code: int) -> Optional[dict]:
    """The run's metrics.json, or None when it failed."""
    path = run_dir / "metrics.json"
    if code != 0 or not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def records(config: Optional[BenchConfig], metrics: dict, baseline: Optional[dict],
            work: Workload) -> list[dict[str, Any]]:
    """One flat record per rank: configuration, environment, memory breakdown, throughput, ratios."""
    out = []
    base_rank = baseline["memory"]["per_rank"][0] if baseline else None
    for rank in metrics["memory"]["per_rank"]:
        states = rank.get("model_state_bytes", {})
        record = {
            "engine": metrics.get("engine", "deepspeed"),
            **(asdict(config) if config else {}), "config": config.name if config else "baseline",
            "rank": rank["rank"], "world_size": metrics["world_size"],
            "dataset": metrics["dataset"]["name"], "num_nodes": metrics["dataset"]["num_nodes"],
            "num_edges": metrics["dataset"]["num_edges"], "arch": work.arch,
            "hidden": work.hidden, "layers": work.layers, "num_parameters": metrics["num_parameters"],
            "task": metrics.get("task", "node"), "test_metric": test_figure(metrics)[0],
            "test_accuracy": metrics.get("test_accuracy"), "test_auc": metrics.get("test_auc"),
            "epoch_time_s": metrics["epoch_time_s"], "train_rate_per_s": training_rate(metrics),
            **{k: v for k, v in metrics["throughput"].items()},
            "step_time_split_s": rank.get("step_time_split_s"),
            "memory_kind": rank["kind"], "peak_bytes": rank["peak_bytes"],
            "peak_reserved_bytes": rank.get("peak_reserved_bytes"),
            "host_training_peak_rss_bytes": rank.get("host_training_peak_rss_bytes"),
            "rss_at_train_start_bytes": rank.get("rss_at_train_start_bytes"),
            "host_step_peak_rss_bytes": rank.get("host_step_peak_rss_bytes"),
            "model_state_bytes": states,
            "zero_formula_bytes": rank.get("zero_formula_bytes"),
            "model_state_measured_over_formula": rank.get("model_state_measured_over_formula"),
            "model_state_accelerator_over_formula":
                rank.get("model_state_accelerator_over_formula"),
            "optimizer_steps": metrics.get("optimizer_steps"),
            "skipped_steps": metrics.get("skipped_steps"),
            "loss_scale": metrics.get("loss_scale"),
            "activation_bytes": rank.get("activation_bytes"),
            "batch_bytes_peak": rank.get("batch_bytes_peak"),
            "batch_x_layout": rank.get("batch_x_layout"),
            "host_bytes": rank.get("host_bytes"),
            "environment": metrics["environment"],
        }
        record["working_set_bytes"] = working_set(record)
        if base_rank is not None:
            record["baseline_working_set_bytes"] = working_set_of(base_rank)
            record["working_set_over_baseline"] = _ratio(record["working_set_bytes"],
                                                         record["baseline_working_set_bytes"])
            record["peak_over_baseline"] = _ratio(rank["peak_bytes"], base_rank["peak_bytes"])
            record["throughput_over_baseline"] = _ratio(training_rate(metrics),
                                                        training_rate(baseline))
            record["baseline_test_accuracy"] = baseline.get("test_accuracy")
            record["baseline_test_figure"] = test_figure(baseline)[1]
        out.append(record)
    return out


def working_set_of(rank: dict) -> int:
    """Model states + activations + batch tensors: what must sit on the accelerator per rank."""
    states = rank.get("model_state_bytes", {}).get("total", 0) or 0
    return int(states + (rank.get("activation_bytes") or {}).get("peak", 0)
               + (rank.get("batch_bytes_peak") or 0))


def working_set(record: dict) -> int:
    return working_set_of(record)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return (a / b) if a is not None and b else None
