"""Train the engine test cases under DeepSpeed and save what they produced for pytest to check.

``deepspeed --num_gpus N tests/engine/workers/engine_worker.py OUT_DIR [--foreign-checkpoint DIR]``

One launch per world size runs every case in turn (one engine after another in
the same process group); rank 0 writes ``OUT_DIR/results_w<N>.pt``.  The
assertions live in ``tests/engine/test_runtime.py``: this script only trains,
checkpoints and records (parameters gathered with
``deepspeed.zero.GatheredParameters`` under ZeRO-3, per-step losses of every rank,
error messages).
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import time
import traceback

import deepspeed
import torch

# engine_cases sits beside this script (the script's folder is first on sys.path).
from engine_cases import (BF16_CASES, EQUALITY_CASES, OFFLOAD_CASES, RESUME_AT, RESUME_CASES,
                          SEED, Case, build_case_model, ds_config, shape_changed, step_batches)
from gnnzero.engine import checkpoint as ckpt
from gnnzero.engine.batches import node_loss, prepare_batch
from gnnzero.engine.ds_config import check_keys, finalize_for_device
from gnnzero.engine.runtime import (compute_dtype, device_type, init_distributed,
                                    initialize_engine)
from gnnzero.errors import GnnZeroError
from gnnzero.models import forward_batch
from gnnzero.utils.dist import barrier, gather_objects


def make_engine(case: Case, model: torch.nn.Module):
    config = ds_config(case)
    check_keys(config)
    engine, _, _ = initialize_engine(model, finalize_for_device(config, device_type()))
    return engine


def gathered_params(engine) -> dict[str, torch.Tensor]:
    """Full fp32 copies of every parameter (gathered from the ZeRO-3 partitions when needed)."""
    named = list(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters([p for _, p in named],
                                           enabled=engine.zero_optimization_stage() == 3):
        return {name: p.detach().float().clone() for name, p in named}


def train_steps(engine, case: Case, rank: int, start: int, stop: int,
                device: torch.device) -> list[float]:
    """Optimizer steps ``start..stop-1``; returns this rank's mean micro-batch loss per step."""
    dtype = compute_dtype(engine)
    losses = []
    for step in range(start, stop):
        total = 0.0
        for batch in step_batches(case, rank, step):
            batch = prepare_batch(batch, device, dtype)
            loss = node_loss(forward_batch(engine, batch), batch)
            engine.backward(loss)
            engine.step()
            total += loss.item()
        assert engine.global_steps == step + 1, (engine.global_steps, step)
        losses.append(total / case.accum)
    return losses


def meta_of(model: torch.nn.Module, case: Case, world: int) -> dict:
    return {"parameters": ckpt.parameter_shapes(model), "world_size": world,
            "zero_stage": case.stage}


def release(engine) -> None:
    engine.destroy()
    gc.collect()


def run_case(case: Case, rank: int, device) -> dict:
    engine = make_engine(case, build_case_model(case))
    t0 = time.perf_counter()
    losses = train_steps(engine, case, rank, 0, case.steps, device)
    result = {"params": gathered_params(engine), "losses": gather_objects(losses),
              "seconds": time.perf_counter() - t0, "skipped_steps": int(engine.skipped_steps)}
    release(engine)
    return result


def run_resume(case: Case, rank: int, world: int, device, root: str) -> dict:
    """RESUME_AT steps, save, a later save killed half-way, fresh engine, load, the rest.

    (The uninterrupted run is the plain-PyTorch reference, which the equality cases
    show the engine reproduces.)"""
    folder = os.path.join(root, case.name)
    model = build_case_model(case)
    meta = meta_of(model, case, world)
    engine = make_engine(case, model)
    first = train_steps(engine, case, rank, 0, RESUME_AT, device)
    saved_at = ckpt.save(engine, folder, engine.global_steps, {"note": "first half"}, meta)
    at_save = gathered_params(engine)
    release(engine)
    if rank == 0:
        # A later save killed half-way: its shard files exist, its meta does not, and
        # (as DeepSpeed's rank 0 does before the barrier) 'latest' already names it.
        partial = os.path.join(folder, f"step{RESUME_AT + 2}")
        shutil.copytree(saved_at, partial)
        os.unlink(os.path.join(partial, ckpt.META_FILE))
        victim = sorted(f for f in os.listdir(partial) if f.endswith(".pt"))[-1]
        with open(os.path.join(partial, victim), "r+b") as handle:
            handle.truncate(100)
        with open(os.path.join(folder, "latest"), "w", encoding="utf-8") as handle:
            handle.write(f"step{RESUME_AT + 2}")
    barrier()
    # A fresh process would start from different weights: prove the load replaces them.
    model = build_case_model(case, seed=SEED + 1)
    engine = make_engine(case, model)
    client = ckpt.load(engine, folder, meta_of(model, case, world))
    resumed_step = engine.global_steps
    second = train_steps(engine, case, rank, RESUME_AT, case.steps, device)
    result = {"params": gathered_params(engine), "resumed_step": resumed_step,
              "losses": gather_objects(first + second), "client_note": client.get("note"),
              "loaded_from": client["checkpoint_path"], "at_save": at_save,
              "folder": folder}
    release(engine)
    return result


def load_message(case: Case, model: torch.nn.Module, folder: str, world: int) -> str:
    """The error a load of ``folder`` into ``model`` gives ('' if it loaded)."""
    engine = make_engine(case, model)
    try:
        ckpt.load(engine, folder, meta_of(model, case, world))
        message = ""
    except GnnZeroError as exc:
        message = str(exc)
    release(engine)
    return message


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--foreign-checkpoint", default=None,
                        help="a checkpoint written with another world size, to load")
    parser.add_argument("--skip-offload", action="store_true")
    parser.add_argument("--local_rank", type=int, default=-1)
    args = parser.parse_args()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    rank, world, device = init_distributed(args.local_rank)
    results: dict = {"world": world, "equality": {}, "bf16": {}, "resume": {}, "errors": {},
                     "failures": {}}

    def attempt(section: str, name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            results[section][name] = fn()
        except Exception:  # recorded so one broken case does not hide the others
            results["failures"][f"{section}/{name}"] = traceback.format_exc()[-3000:]
            if rank == 0:
                print(results["failures"][f"{section}/{name}"], file=sys.stderr, flush=True)
        if rank == 0:
            print(f"{section}/{name}: {time.perf_counter() - t0:.1f} s", flush=True)

    # Every world size: the equality cases.  Two ranks only (the harder case, and the
    # time budget): offload, bf16, resume and the shape-mismatch load.
    cases = EQUALITY_CASES + ([] if args.skip_offload or world == 1 else OFFLOAD_CASES)
    for case in cases:
        attempt("equality", case.name, lambda: run_case(case, rank, device))
    ckpt_root = os.path.join(args.out_dir, f"checkpoints_w{world}")
    if world > 1:
        for case in BF16_CASES:
            attempt("bf16", case.name, lambda: run_case(case, rank, device))
        for case in RESUME_CASES:
            attempt("resume", case.name,
                    lambda: run_resume(case, rank, world, device, ckpt_root))
        case = RESUME_CASES[1]
        attempt("errors", "shape", lambda: load_message(
            case, shape_changed(case), os.path.join(ckpt_root, case.name), world))
    if args.foreign_checkpoint:
        case = RESUME_CASES[1]
        attempt("errors", "world", lambda: load_message(
            case, build_case_model(case), args.foreign_checkpoint, world))
    if rank == 0:
        torch.save(results, os.path.join(args.out_dir, f"results_w{world}.pt"))
    barrier()


if __name__ == "__main__":
    main()
