"""The training job: data -> rank-sharded mini-batches -> model -> DeepSpeed engine -> metrics."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from tqdm import tqdm

from ..config import RunConfig
from ..data import build_loader, load_dataset
from ..data.datasets import GraphDataset, check_dataset_source
from ..data.pca import reduce_features
from ..errors import GnnZeroError
from ..models import build_model, count_parameters, forward_batch, zero_model_state_bytes
from ..models.builders import validate_model_args
from ..observe.memory import peak_memory, reset_peak
from ..observe.monitor import TrainingMonitor
from ..observe.probe import MemoryProbe
from ..observe.report import print_summary, run_environment
from ..utils.atomic import atomic_json_dump
from ..utils.dist import all_reduce, barrier, gather_objects
from . import checkpoint as ckpt
from .batches import node_loss, prepare_batch
from .ds_config import (apply_overrides, finalize_for_device, load_ds_config, offload_of,
                        precision_of, zero_stage_of)
from .evaluation import evaluate, final_evaluate, sampled_evaluate
from .runtime import (compute_dtype, device_type, init_distributed, initialize_engine,
                      parameter_fingerprint)


@dataclass
class StepTimes:
    """Seconds spent per phase of a training step, summed over an epoch."""

    sampling: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class Progress:
    """Where training stands; saved in checkpoints."""

    epoch: int = 0
    batch_in_epoch: int = 0
    loss_curve: list = field(default_factory=list)     # (optimizer step, mean loss)
    epoch_log: list = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_finite(loss: float, step: int, epoch: int, device: torch.device,
                  last_checkpoint: Optional[str]) -> None:
    """Stop every rank together when any rank's loss is NaN/inf."""
    bad = all_reduce([0.0 if math.isfinite(loss) else 1.0], device)[0]
    if bad:
        raise GnnZeroError(f"loss became {loss} at optimizer step {step} (epoch {epoch}) on "
                           f"{int(bad)} rank(s); last good checkpoint: {last_checkpoint or 'none'};"
                           f" lower --lr, set --grad-clip, or check the features for extreme values")


def _best_by_validation(entries: list[dict]) -> dict:
    """The entry with the highest validation accuracy, the earliest one on ties."""
    return max(entries, key=lambda e: (e["val_accuracy"], -e["epoch"]))


def best_validation_epoch(epoch_log: list[dict]) -> Optional[dict[str, Any]]:
    """Model selection as in PyG's examples: the epoch with the best (exact) validation
    accuracy and the test accuracy measured at that epoch (None without such epochs)."""
    scored = [e for e in epoch_log if "test_accuracy" in e and "val_accuracy" in e]
    if not scored:
        return None
    best = _best_by_validation(scored)
    return {"epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
            "test_accuracy": best["test_accuracy"]}


def epochs_without_improvement(epoch_log: list[dict]) -> Optional[int]:
    """Epochs from the best validation accuracy (earliest on ties) to the last validated
    epoch; None before the first validation.  Every rank sees the same all-reduced
    accuracies, so early stopping on it stops all ranks at the same epoch."""
    scored = [e for e in epoch_log if "val_accuracy" in e]
    if not scored:
        return None
    return scored[-1]["epoch"] - _best_by_validation(scored)["epoch"]


def _build_loader_rank0_first(dataset: GraphDataset, cfg: RunConfig, rank: int, world: int):
    """Rank 0 partitions / computes norms and fills the cache; the others then read it."""
    if rank != 0:
        barrier()
    loader = build_loader(dataset, cfg.loader, rank, world, cfg.train.seed)
    if rank == 0:
        barrier()
    return loader


def _meta(cfg: RunConfig, world: int, ds_config: dict) -> dict[str, Any]:
    return {"model": {k: v for k, v in cfg.model.__dict__.items() if k != "dropout"},
            "world_size": world, "zero_stage": zero_stage_of(ds_config),
            "dataset": cfg.data.dataset, "num_nodes": cfg.data.num_nodes}


def train_epoch(engine, loader, epoch: int, start: int, device: torch.device, dtype: torch.dtype,
                progress: Progress, cfg: RunConfig, meta: dict, show: bool,
                state: dict) -> tuple[StepTimes, dict[str, float], bool]:
    """One epoch (from batch ``start``); returns phase times, counts and whether max_steps hit."""
    times, counts = StepTimes(), {"train_nodes": 0.0, "batch_nodes": 0.0, "batch_edges": 0.0,
                                  "batches": 0.0, "loss_sum": 0.0}
    engine.train()
    batches: Iterator = loader.epoch(epoch, start=start)
    bar = tqdm(total=len(loader), initial=start, desc=f"epoch {epoch}", disable=not show,
               leave=False, dynamic_ncols=True)
    step_losses: list[float] = []
    for index in range(start, len(loader)):
        t0 = time.perf_counter()
        batch = prepare_batch(next(batches), device, dtype)
        state["probe"].begin_step(batch)
        state["monitor"].start_forward(engine.global_steps + 1)
        t1 = time.perf_counter()
        with state["probe"].forward():
            loss = node_loss(forward_batch(engine, batch), batch)
        # Before backward: a NaN/inf loss never reaches the weights or a checkpoint.
        loss_value = loss.item()  # one host sync per micro-step
        _check_finite(loss_value, engine.global_steps + 1, epoch, device, state.get("last_checkpoint"))
        _sync(device)
        t2 = time.perf_counter()
        engine.backward(loss)
        _sync(device)
        t3 = time.perf_counter()
        state["probe"].after_backward()  # model states counted on the first 3 steps only
        if engine.is_gradient_accumulation_boundary():  # all ranks: a collective under ZeRO
            state["monitor"].record_gradients(engine, engine.global_steps + 1)
        engine.step()
        _sync(device)
        state["probe"].after_step()
        if engine.global_steps != state["last_step"]:
            state["monitor"].record_global_norm(engine, engine.global_steps)
        t4 = time.perf_counter()
        times.sampling += t1 - t0
        times.forward += t2 - t1
        times.backward += t3 - t2
        times.optimizer += t4 - t3
        counts["train_nodes"] += float(batch.loss_mask.sum())
        counts["batch_nodes"] += batch.num_nodes
        counts["batch_edges"] += batch.edge_index.size(1)
        counts["batches"] += 1
        counts["loss_sum"] += loss_value
        step_losses.append(loss_value)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if engine.global_steps != state["last_step"]:  # an optimizer step just happened
            state["last_step"] = engine.global_steps
            mean = all_reduce([sum(step_losses) / len(step_losses)], device)[0]
            progress.loss_curve.append((engine.global_steps, mean / engine.world_size))
            step_losses = []
            progress.epoch, progress.batch_in_epoch = epoch, index + 1
            every = cfg.train.checkpoint_every
            if every and not cfg.train.no_checkpoint and engine.global_steps % every == 0:
                state["last_checkpoint"] = _save(engine, cfg, progress, meta)
            if cfg.train.max_steps and engine.global_steps >= cfg.train.max_steps:
                bar.close()
                return times, counts, True
    bar.close()
    return times, counts, False


def _save(engine, cfg: RunConfig, progress: Progress, meta: dict) -> str:
    client = {"epoch": progress.epoch, "batch_in_epoch": progress.batch_in_epoch,
              "loss_curve": progress.loss_curve, "epoch_log": progress.epoch_log}
    # ckpt.save adds every rank's RNG state; ckpt.load restores this rank's.
    return ckpt.save(engine, os.path.join(cfg.train.output_dir, "checkpoints"),
                     engine.global_steps, client, meta, cfg.train.keep_checkpoints)


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train as configured; write ``metrics.json`` and ``ds_config_used.json``; return the metrics."""
    ds_config = finalize_for_device(apply_overrides(load_ds_config(cfg.ds_config), cfg.engine),
                                    device_type())
    validate_model_args(cfg.model)
    check_dataset_source(cfg.data.dataset, cfg.data.data_root)
    rank, world, device = init_distributed(cfg.local_rank)
    show = rank == 0
    torch.manual_seed(cfg.train.seed)
    t_load = time.perf_counter()
    dataset = load_dataset(cfg.data.dataset, cfg.data.data_root, cfg.data.num_nodes,
                           cfg.train.seed, cfg.data.feature_store, cfg.data.cache_dir,
                           avg_degree=cfg.data.avg_degree,
                           words_per_node=cfg.data.words_per_node)
    if cfg.data.pca_components:
        dataset = reduce_features(dataset, cfg.data.pca_components, seed=cfg.train.seed)
    loader = _build_loader_rank0_first(dataset, cfg, rank, world)
    load_seconds = time.perf_counter() - t_load
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    m = cfg.model
    model = build_model(m.arch, dataset.num_features, m.hidden, dataset.num_classes, m.layers,
                        share_weights=m.share_weights, rank=m.rank, dropout=m.dropout, norm=m.norm,
                        jk=m.jk, heads=m.heads, activation_checkpointing=m.activation_checkpointing)
    num_params = count_parameters(model)
    engine, _, _ = initialize_engine(model, ds_config)
    dtype = compute_dtype(engine)
    meta = {**_meta(cfg, world, ds_config), "parameters": ckpt.parameter_shapes(engine.module)}
    progress = Progress()
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    ckpt_dir = os.path.join(cfg.train.output_dir, "checkpoints")
    last_checkpoint = None
    if cfg.train.resume:
        client = ckpt.load(engine, ckpt_dir, meta)
        if client is not None:
            last_checkpoint = client["checkpoint_path"]
            progress = Progress(client["epoch"], client["batch_in_epoch"], client["loss_curve"],
                                client["epoch_log"])
            if show:
                print(f"resumed from step {engine.global_steps} (epoch {progress.epoch}, "
                      f"batch {progress.batch_in_epoch})", flush=True)
    state: dict[str, Any] = {"last_step": engine.global_steps, "probe": MemoryProbe(
        engine.module, engine.optimizer, device, num_params, zero_stage_of(ds_config), world,
        precision_of(ds_config), offload_of(ds_config))}
    state["last_checkpoint"] = last_checkpoint
    state["probe"].record_host(dataset, loader)
    state["monitor"] = TrainingMonitor(engine, os.path.join(cfg.train.output_dir, "monitor"),
                                       cfg.train.monitor_every, rank)
    if rank == 0:
        atomic_json_dump(ds_config, os.path.join(cfg.train.output_dir, "ds_config_used.json"))

    reset_peak(device)
    totals = {"train_nodes": 0.0, "batch_nodes": 0.0, "batch_edges": 0.0, "batches": 0.0}
    phase = StepTimes()
    train_seconds, stopped = 0.0, False
    epoch, start = progress.epoch, progress.batch_in_epoch
    if start >= len(loader):
        epoch, start = epoch + 1, 0
    for epoch in range(epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        times, counts, stopped = train_epoch(engine, loader, epoch, start, device, dtype,
                                             progress, cfg, meta, show, state)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        start = 0
        for key in totals:
            totals[key] += counts[key]
        for key, value in times.as_dict().items():
            setattr(phase, key, getattr(phase, key) + value)
        loss = all_reduce([counts["loss_sum"], counts["batches"]], device)
        entry = {"epoch": epoch, "loss": loss[0] / max(loss[1], 1), "seconds": seconds}
        entry["peak_memory_bytes"] = all_reduce([peak_memory(device)["peak_bytes"]], device,
                                                "max")[0]
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch == cfg.train.epochs - 1 or stopped:
            if cfg.train.sampled_eval_nodes:
                entry["sampled_val"] = sampled_evaluate(engine, dataset,
                                                        cfg.train.sampled_eval_nodes, device,
                                                        dtype, seed=cfg.train.seed, epoch=epoch)
                entry["val_accuracy"] = entry["sampled_val"]["accuracy"]
            else:
                split_acc = evaluate(engine, dataset, loader, device, dtype)
                entry["val_accuracy"] = split_acc["val"]["accuracy"]
                entry["test_accuracy"] = split_acc["test"]["accuracy"]
        progress.epoch_log.append(entry)
        waited = epochs_without_improvement(progress.epoch_log)
        early_stop = bool(cfg.train.patience) and waited is not None \
            and waited >= cfg.train.patience
        if show:
            val = f"  val acc {entry['val_accuracy']:.4f}" if "val_accuracy" in entry else ""
            if "sampled_val" in entry:
                sv = entry["sampled_val"]
                val += f" [{sv['ci_low']:.3f}, {sv['ci_high']:.3f}] ({sv['total']} sampled)"
            print(f"epoch {epoch:3d}  loss {entry['loss']:.4f}{val}  time {seconds:.2f}s",
                  flush=True)
            if early_stop:
                print(f"early stop after epoch {epoch}: no better validation accuracy for "
                      f"{waited} epochs (--patience {cfg.train.patience})", flush=True)
        if not stopped:  # a --max-steps stop keeps its place inside the epoch for --resume
            progress.epoch, progress.batch_in_epoch = epoch + 1, 0
        # DeepSpeed does not checkpoint half-accumulated gradients: save at step boundaries only.
        at_boundary = engine.micro_steps % engine.gradient_accumulation_steps() == 0
        saved_now = str(state.get("last_checkpoint")).endswith(f"step{engine.global_steps}")
        if not cfg.train.no_checkpoint and (stopped or not cfg.train.checkpoint_every) \
                and at_boundary and not saved_now:  # a --max-steps stop always saves
            state["last_checkpoint"] = _save(engine, cfg, progress, meta)
        if stopped or early_stop:
            state["early_stopped_epoch"] = epoch if early_stop else None
            break

    final = final_evaluate(engine, dataset, loader, device, dtype, show)
    state["monitor"].close()
    summed = all_reduce([totals[k] for k in totals], device)
    totals = dict(zip(totals, summed))
    per_rank = gather_objects({"rank": rank, **peak_memory(device), **state["probe"].summary(),
                                "step_time_split_s": phase.as_dict(),
                                "param_fingerprint": parameter_fingerprint(engine)})
    precision, stage = precision_of(ds_config), zero_stage_of(ds_config)
    formula = zero_model_state_bytes(num_params, stage, world, precision,
                                     offload_optimizer="optimizer" in offload_of(ds_config))
    epochs_run = max(1, len(progress.epoch_log))
    metrics = {
        "test_accuracy": final["test"]["accuracy"], "val_accuracy": final["val"]["accuracy"],
        "train_accuracy": final["train"]["accuracy"], "evaluation": final,
        "epoch_time_s": train_seconds / max(1, epochs_run),
        "train_seconds": train_seconds, "load_seconds": load_seconds,
        "throughput": {"train_nodes_per_s": totals["train_nodes"] / max(train_seconds, 1e-9),
                       "batch_nodes_per_s": totals["batch_nodes"] / max(train_seconds, 1e-9),
                       "edges_per_s": totals["batch_edges"] / max(train_seconds, 1e-9),
                       "batches_per_s": totals["batches"] / max(train_seconds, 1e-9)},
        "memory": {"kind": per_rank[0]["kind"], "per_rank": per_rank,
                   "zero_formula_model_state_bytes": formula.as_dict()},
        "zero_stage": stage, "precision": precision, "offload": offload_of(ds_config),
        "world_size": world, "num_parameters": num_params,
        "optimizer_steps": engine.global_steps, "skipped_steps": int(engine.skipped_steps),
        "loss_curve": progress.loss_curve, "epochs": progress.epoch_log,
        "best_val": best_validation_epoch(progress.epoch_log),
        "early_stopped_epoch": state.get("early_stopped_epoch"),
        "dataset": {"name": dataset.name, "num_nodes": dataset.num_nodes,
                    "num_edges": dataset.num_edges, "num_features": dataset.num_features,
                    "num_classes": dataset.num_classes,
                    "feature_store": type(dataset.features).__name__,
                    "feature_store_bytes": dataset.features.nbytes()},
        "loader": {"kind": cfg.loader.kind, "steps_per_epoch": len(loader)},
        "config": cfg.as_dict(), "ds_config": ds_config, "environment": run_environment(device),
        "monitor": state["monitor"].summary(),
    }
    if rank == 0:
        atomic_json_dump(metrics, os.path.join(cfg.train.output_dir, "metrics.json"))
        print_summary(metrics)
    barrier()
    return metrics
