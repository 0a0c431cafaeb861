"""One training run in three steps: :func:`setup` (config to objects), :func:`fit` (the
loop) and :func:`finalize` (exact evaluation, metrics, summary).

``launch/train.py`` calls :func:`run`; the plain-PyG baseline calls it with
``plain=True``, which swaps DeepSpeed for :class:`~gnnzero.engine.plain.PlainEngine`
and keeps everything else.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch

from .builder import build_dataset, build_loader, build_model
from .config import RunConfig
from .data.datasets import check_dataset_source
from .data.hetero import is_hetero_source
from .engine import checkpoint as ckpt
from .engine.ds_config import (apply_overrides, finalize_for_device, load_ds_config, offload_of,
                               precision_of, zero_stage_of)
from .engine.ds_schema import check_train_batch_size
from .engine.runtime import compute_dtype, device_type, parameter_fingerprint
from .engine.state import RunState
from .engine.loss_scale import current_scale
from .engine.trainer import Trainer, fill_from_final
from .errors import GnnZeroError
from .models import count_parameters, zero_model_state_bytes
from .models.accounting import persistent_parameter_count
from .models.link import encoder_of
from .observe.memory import peak_memory, reset_peak
from .observe.metrics import assemble_metrics
from .observe.monitor import TrainingMonitor
from .observe.probe import MemoryProbe
from .observe.report import print_summary, run_environment
from .utils.atomic import atomic_json_dump
from .tasks import build_task
from .utils.dist import all_reduce, barrier, gather_objects


@dataclass
class Job:
    """What :func:`setup` built; :func:`fit` and :func:`finalize` use it."""

    cfg: RunConfig
    ds_config: dict
    plain: bool
    rank: int
    world: int
    device: torch.device
    dataset: Any
    loader: Any
    num_params: int
    trainer: Trainer
    load_seconds: float


def check_output_dir(path: str) -> None:
    """Refuse an --output-dir this process cannot write, before anything is trained."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise GnnZeroError(f"--output-dir {path} is not writable ({exc.strerror or exc}); "
                           f"choose a folder you can write to") from exc


def config_meta(cfg: RunConfig, world: int, ds_config: dict) -> dict[str, Any]:
    """The part of :func:`resume_meta` the config alone fixes (checked before any data load)."""
    return {"model": {k: v for k, v in cfg.model.__dict__.items() if k != "dropout"},
            "task": {"task": cfg.task.task, **cfg.task.link_options()},
            "world_size": world, "zero_stage": zero_stage_of(ds_config),
            "precision": precision_of(ds_config), "seed": cfg.train.seed,
            "gradient_accumulation_steps": ds_config.get("gradient_accumulation_steps", 1),
            "loader": {k: v for k, v in cfg.loader.__dict__.items() if k != "cache_dir"},
            "dataset": {"name": cfg.data.dataset, "pca_components": cfg.data.pca_components,
                        "categorical": cfg.data.categorical,
                        **({"target_type": cfg.data.target_type} if cfg.data.target_type
                           else {}),
                        "synthetic": cfg.data.synthetic_options()}}


def resume_meta(cfg: RunConfig, dataset, world: int, ds_config: dict, model) -> dict[str, Any]:
    """Every setting that changes the batches or the numerics; a resumed run must match it."""
    meta = config_meta(cfg, world, ds_config)
    meta["dataset"].update(fingerprint=dataset.fingerprint(), num_features=dataset.num_features)
    meta["parameters"] = ckpt.parameter_shapes(getattr(model, "module", model))
    return meta


def _resolved_ds_config(cfg: RunConfig, plain: bool) -> dict:
    ds_config = apply_overrides(load_ds_config(cfg.ds_config), cfg.engine)
    if plain:
        return ds_config
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher before we start
    check_train_batch_size(ds_config, world, cfg.ds_config)
    return finalize_for_device(ds_config, device_type())


def _engine(cfg: RunConfig, model: torch.nn.Module, ds_config: dict, plain: bool, device):
    if plain:
        from .engine.plain import PlainEngine, optimizer_from_ds_config

        model = model.to(device)
        return PlainEngine(model, optimizer_from_ds_config(model, ds_config),
                           int(ds_config.get("gradient_accumulation_steps", 1)),
                           float(ds_config.get("gradient_clipping", 0.0) or 0.0),
                           world_size=torch.distributed.get_world_size()
                           if torch.distributed.is_initialized() else 1)
    from .engine.runtime import initialize_engine

    return initialize_engine(model, ds_config)[0]


def setup(cfg: RunConfig, plain: bool = False) -> Job:
    """Check what can be checked cheaply, then build data, loader, model, engine, trainer."""
    ds_config = _resolved_ds_config(cfg, plain)
    check_dataset_source(cfg.data.dataset, cfg.data.data_root)
    cfg.check_graph_kind(is_hetero_source(cfg.data.dataset))
    check_output_dir(cfg.train.output_dir)
    if plain and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        rank, world = 0, 1
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    else:  # DeepSpeed, or the baseline launched on several ranks (DDP, engine/plain.py)
        from .engine.runtime import init_distributed

        rank, world, device = init_distributed(cfg.local_rank)
    show = rank == 0
    if not plain:   # --resume against the checkpoint's recorded settings, before the data load
        ckpt.check_resumable(os.path.join(cfg.train.output_dir, "checkpoints"),
                             cfg.checkpoint.resume, config_meta(cfg, world, ds_config))
    torch.manual_seed(cfg.train.seed)
    t_load = time.perf_counter()
    # Every rank builds its own view; what is written to disk (a prepared directory, METIS
    # parts) is built by one process per node while the others wait on a file lock, which
    # has no collective timeout.
    dataset = build_dataset(cfg)
    loader = build_loader(cfg, dataset, rank, world)
    load_seconds = time.perf_counter() - t_load
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg, dataset)
    num_params = count_parameters(model)
    engine = _engine(cfg, model, ds_config, plain, device)
    stage, precision = (0, "fp32") if plain else (zero_stage_of(ds_config),
                                                  precision_of(ds_config))
    probe = MemoryProbe(engine.module, engine.optimizer, device, num_params, stage, world,
                        precision, "none" if plain else offload_of(ds_config))
    probe.record_host(dataset, loader)
    task = build_task(cfg.task, dataset)
    method, rule = task.per_epoch_rule(encoder_of(model), dataset, cfg.eval)
    if show:
        print(rule, flush=True)
    trainer = Trainer(
        engine=engine, task=task, loader=loader, dataset=dataset, device=device,
        dtype=torch.float32 if plain else compute_dtype(engine), train=cfg.train,
        evaluation=cfg.eval, checkpoint=cfg.checkpoint, eval_method=method,
        meta=resume_meta(cfg, dataset, world, ds_config, engine.module), probe=probe,
        monitor=TrainingMonitor(engine, os.path.join(cfg.train.output_dir, "monitor"),
                                cfg.train.monitor_every, rank),
        state=RunState(), show=show, writes_checkpoints=not plain,
        prefetch_batches=0 if plain else cfg.train.prefetch_batches,
        final_method=task.final_method(engine, dataset)[0])
    if not plain:
        trainer.resume()
    if rank == 0:
        cfg.save(cfg.train.output_dir)
        if not plain:
            atomic_json_dump(ds_config, os.path.join(cfg.train.output_dir, "ds_config_used.json"))
    return Job(cfg, ds_config, plain, rank, world, device, dataset, loader, num_params, trainer,
               load_seconds)


def fit(job: Job):
    """Train; returns the step totals and the training seconds."""
    reset_peak(job.device)
    return job.trainer.fit()


def finalize(job: Job, totals, train_seconds: float) -> dict[str, Any]:
    """Exact final evaluation, per-rank memory, ``metrics.json`` and the summary table."""
    trainer, ds_config, device = job.trainer, job.ds_config, job.device
    engine = trainer.engine
    final = trainer.task.final_evaluation(trainer, show=job.rank == 0)
    fill_from_final(trainer.state.epoch_log, trainer.task, final)
    trainer.monitor.close()
    summed = dict(zip(totals.counts, all_reduce(list(totals.counts.values()))))
    per_rank = gather_objects({"rank": job.rank, **peak_memory(device), **trainer.probe.summary(),
                               "step_time_split_s": dict(totals.seconds),
                               "param_fingerprint": parameter_fingerprint(engine)})
    if job.plain:
        stage, precision, offload, formula = None, "fp32", "none", None
    else:
        precision, stage, offload = (precision_of(ds_config), zero_stage_of(ds_config),
                                     offload_of(ds_config))
        formula = zero_model_state_bytes(job.num_params, stage, job.world, precision,
                                         persistent_params=persistent_parameter_count(
                                             engine.module),
                                         offload_optimizer="optimizer" in offload).as_dict()
    metrics = assemble_metrics(
        engine_kind="plain-pyg" if job.plain else "deepspeed", task=trainer.task, final=final,
        state=trainer.state,
        totals=totals, summed_counts=summed, train_seconds=train_seconds,
        load_seconds=job.load_seconds, per_rank=per_rank, formula=formula, zero_stage=stage,
        precision=precision, offload=offload, world_size=job.world,
        num_parameters=job.num_params, optimizer_steps=engine.global_steps,
        skipped_steps=int(engine.skipped_steps), loss_scale=current_scale(engine), dataset=job.dataset,
        loader_kind=job.cfg.loader.kind, steps_per_epoch=len(job.loader),
        config=job.cfg.as_dict(), ds_config=None if job.plain else ds_config,
        environment=run_environment(device), monitor=trainer.monitor.summary())
    if job.rank == 0:
        atomic_json_dump(metrics, os.path.join(job.cfg.train.output_dir, "metrics.json"))
        print_summary(metrics)
    barrier()
    return metrics


def run(cfg: RunConfig, plain: bool = False) -> dict[str, Any]:
    """Train as configured; write ``config.json``, ``metrics.json`` (and, with DeepSpeed,
    ``ds_config_used.json`` and checkpoints); return the metrics."""
    job = setup(cfg, plain)
    totals, train_seconds = fit(job)
    return finalize(job, totals, train_seconds)
