"""``check_finite_gradients``: a non-finite gradient stops the run before ``engine.step()``.

Real DeepSpeed engines on a tiny GraphSAGE model, CPU/gloo:

* in this process, a world of one, one engine after another: ZeRO-0/1/2/3 in fp32
  and bf16 (the ZeRO-1 bf16 case with fp32 accumulation is DeepSpeed's
  ``BF16_Optimizer``);
* one ``deepspeed --num_gpus 2`` launch (e2e) of this file as the worker
  (``python tests/engine/test_guards.py OUT_DIR``): the inf is injected on rank 1
  only and both ranks must stop.

A gradient is made non-finite with a hook on one parameter (the loss stays
finite, as with an overflow in backward).  A guarded step is what the trainer
does: ``check_finite_gradients(...)`` and, only if it returns, ``engine.step()``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from gnnzero.engine import guards
from gnnzero.engine.batches import node_loss, prepare_batch
from gnnzero.engine.guards import check_finite_gradients
from gnnzero.errors import GnnZeroError
from tests.helpers import REPO, run_deepspeed, world_of_one_process_group

CHECKPOINT = "runs/x/checkpoints/step4"
EPOCH = 3
# (ZeRO stage, precision, extra ds_config keys); ids name them.
CASES = {
    "z0-fp32": (0, "fp32", {}),
    "z1-fp32": (1, "fp32", {}),
    "z2-fp32": (2, "fp32", {}),
    "z3-fp32": (3, "fp32", {}),
    "z0-bf16": (0, "bf16", {}),
    "z1-bf16-fp32acc": (1, "bf16", {"data_types": {"grad_accum_dtype": "fp32"}}),
    "z2-bf16": (2, "bf16", {}),
    "z3-bf16": (3, "bf16", {}),
}
TWO_RANK_CASES = ["z0-fp32", "z1-fp32", "z2-fp32", "z3-fp32", "z2-bf16"]
COLLECTIVES = ("all_reduce", "all_gather", "allgather", "reduce_scatter", "broadcast",
               "all_to_all", "reduce", "gather", "scatter")


# -- shared by the in-process tests and the 2-rank worker ---------------------------------

def ds_config(stage: int, precision: str, extra: dict, accum: int = 1) -> dict:
    zero = {"stage": stage}
    if stage == 3:
        zero["stage3_param_persistence_threshold"] = 0  # partition every parameter
    # torch's AdamW: DeepSpeed's FusedAdam is a CUDA kernel.
    optimizer = {"type": "AdamW", "params": {"lr": 0.01, "torch_adam": True}}
    return {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": accum,
            "gradient_clipping": 1.0, "steps_per_print": 10 ** 9, "optimizer": optimizer,
            "bf16": {"enabled": precision == "bf16"}, "zero_optimization": zero, **extra}


def base_model() -> torch.nn.Module:
    from gnnzero.models import build_model

    torch.manual_seed(0)
    return build_model("sage", 8, 16, 3, 2, dropout=0.0)


def make_engine(case: str, accum: int = 1):
    from gnnzero.engine.runtime import initialize_engine

    stage, precision, extra = CASES[case]
    engine, _, _ = initialize_engine(base_model(), ds_config(stage, precision, extra, accum))
    return engine


def graph(rank: int, micro: int):
    from torch_geometric.data import Data

    gen = torch.Generator().manual_seed(100 * rank + micro)
    n = 20 + rank
    return Data(x=torch.randn(n, 8, generator=gen),
                edge_index=torch.randint(0, n, (2, 4 * n), generator=gen),
                y=torch.randint(0, 3, (n,), generator=gen), loss_mask=torch.ones(n, dtype=torch.bool))


def backward(engine, rank: int, micro: int, device, poison: float | None = None) -> float:
    """Forward and ``engine.backward`` of one micro-batch; ``poison`` (inf/nan) replaces the
    first element of the first parameter's gradient on the way (the loss stays finite)."""
    from gnnzero.engine.runtime import compute_dtype
    from gnnzero.models import forward_batch

    param = next(engine.module.parameters())
    handle = None
    if poison is not None:
        def hook(grad):
            grad = grad.clone()
            grad.view(-1)[0] = poison
            return grad
        handle = param.register_hook(hook)
    batch = prepare_batch(graph(rank, micro), device, compute_dtype(engine))
    loss = node_loss(forward_batch(engine, batch), batch)
    engine.backward(loss)
    if handle is not None:
        handle.remove()
    return float(loss.detach())


def guarded_step(engine, device) -> None:
    """What the trainer does at the boundary: the guard, then (only if it passes) the step."""
    check_finite_gradients(engine, engine.global_steps + 1, EPOCH, CHECKPOINT)
    engine.step()


def parameters(engine) -> list[torch.Tensor]:
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=engine.zero_optimization_stage() == 3):
        return [p.detach().float().clone() for p in params]


def unchanged(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, after))


@contextmanager
def counting_collectives():
    """Count every collective issued through ``torch.distributed`` or ``deepspeed.comm``."""
    import deepspeed.comm

    counts: dict[str, int] = {}
    saved = []
    for module in (torch.distributed, deepspeed.comm):
        for name in dir(module):
            fn = getattr(module, name)
            if callable(fn) and not isinstance(fn, type) and not name.startswith("_") \
                    and any(key in name for key in COLLECTIVES) and "init" not in name:
                def counted(*args, _fn=fn, _name=name, **kwargs):
                    counts[_name] = counts.get(_name, 0) + 1
                    return _fn(*args, **kwargs)
                saved.append((module, name, fn))
                setattr(module, name, counted)
    try:
        yield counts
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def timed_guard(engine, device) -> tuple[float, dict]:
    """One guard call on finite gradients: seconds taken and the collectives it issued."""
    with counting_collectives() as counts:
        t0 = time.perf_counter()
        check_finite_gradients(engine, engine.global_steps + 1, EPOCH, CHECKPOINT)
        seconds = time.perf_counter() - t0
    return seconds, dict(counts)


# -- in-process tests, a world of one ------------------------------------------------------

@pytest.fixture(scope="module")
def world_of_one():
    """An in-process world of one, for the whole module; yields its device."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    with world_of_one_process_group() as (_, _, device):
        yield device


@pytest.mark.parametrize("case", list(CASES))
def test_bad_gradient_stops_before_the_step_and_a_finite_one_passes(world_of_one, case):
    device = world_of_one
    engine = make_engine(case)
    try:
        # Finite: the guard passes, reads only this rank's data (one all_reduce of three
        # flags and nothing else), and the step runs.
        backward(engine, 0, 0, device)
        seconds, counts = timed_guard(engine, device)
        assert counts == {"all_reduce": 1}, f"the guard communicated: {counts}"
        norm = guards.local_gradient_norm(guards.local_gradients(engine))
        engine.step()
        assert engine.global_steps == 1 and engine.skipped_steps == 0
        # It read the gradient the step used: at a world of one its norm is DeepSpeed's own
        # (pre-clipping) global norm, which every optimizer but plain torch reports.
        deepspeed_norm = engine.get_global_grad_norm()
        if case != "z0-fp32":
            assert norm == pytest.approx(float(deepspeed_norm), rel=1e-4), (norm, deepspeed_norm)
        # Non-finite: raised before engine.step(), the weights untouched.
        poison = float("nan") if case == "z2-bf16" else float("inf")
        before = parameters(engine)
        backward(engine, 0, 1, device, poison=poison)
        with pytest.raises(GnnZeroError) as error:
            guarded_step(engine, device)
        assert unchanged(before, parameters(engine))
        assert engine.global_steps == 1
        message = str(error.value)
        assert "\n" not in message
        kind = "nan" if poison != poison else "inf"
        assert f"gradient norm became {kind} at optimizer step 2 (epoch {EPOCH})" in message
        assert "on 1 of 1 rank(s)" in message and CHECKPOINT in message
        assert "--lr" in message and "--grad-clip" in message
        print(f"{case}: guard {seconds * 1e3:.2f} ms")
    finally:
        engine.destroy()


@pytest.mark.parametrize("case", ["z0-fp32", "z2-fp32"])
def test_inf_in_an_early_micro_batch_is_caught_at_the_boundary(world_of_one, case):
    """Accumulation over 2 micro-batches: between boundaries the guard does nothing; at
    the boundary the accumulated (ZeRO-2: already reduced) gradient is checked."""
    device = world_of_one
    engine = make_engine(case, accum=2)
    try:
        before = parameters(engine)
        backward(engine, 0, 0, device, poison=float("inf"))
        assert not engine.is_gradient_accumulation_boundary()
        guarded_step(engine, device)  # no boundary: nothing to check, no optimizer step
        backward(engine, 0, 1, device)
        assert engine.is_gradient_accumulation_boundary()
        with pytest.raises(GnnZeroError, match="optimizer step 1 "):
            guarded_step(engine, device)
        assert unchanged(before, parameters(engine)) and engine.global_steps == 0
    finally:
        engine.destroy()


@pytest.mark.e2e
def test_two_ranks_stop_together_when_one_rank_has_an_inf(tmp_path):
    try:  # ~35 s on 2 CPU cores; a guard that raises on some ranks only hangs the others
        proc = run_deepspeed(str(Path(__file__).relative_to(REPO)), [str(tmp_path)],
                             num_procs=2, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the 2-rank worker hung: the guard did not stop every rank together")
    results = tmp_path / "guards_w2.json"
    assert proc.returncode == 0 and results.exists(), (proc.stdout[-3000:],
                                                       proc.stderr[-3000:])
    runs = json.loads(results.read_text())
    assert sorted(runs) == sorted(TWO_RANK_CASES)
    for case, ranks in runs.items():
        assert len(ranks) == 2, case
        for rank, run in enumerate(ranks):
            where = f"{case} rank {rank}"
            assert run["failure"] is None, f"{where}: {run['failure']}"
            # Finite: passes, one all_reduce of three flags and nothing else.
            assert run["finite_collectives"] == {"all_reduce": 1}, where
            assert run["finite_stepped"], where
            # inf on rank 1 only: every rank raises, nobody steps.
            assert run["error"] is not None, f"{where}: the guard passed"
            assert run["error"] == ranks[0]["error"], where
            assert run["params_unchanged"] and run["global_steps"] == 1, where
        # After the reduction the bad element sits on both replicas under ZeRO-0, and in
        # rank 0's partition only under ZeRO-1/2/3 (each rank read its own data).
        seen = 2 if CASES[case][0] == 0 else 1
        assert f"on {seen} of 2 rank(s)" in ranks[0]["error"], (case, ranks[0]["error"])
        assert "became inf at optimizer step 2" in ranks[0]["error"], case


# -- the 2-rank worker: deepspeed --num_gpus 2 tests/engine/test_guards.py OUT_DIR -----------

def run_two_rank_case(case: str, rank: int, device) -> dict:
    out = {"failure": None, "error": None}
    engine = make_engine(case)
    try:
        backward(engine, rank, 0, device)
        out["finite_seconds"], out["finite_collectives"] = timed_guard(engine, device)
        engine.step()
        out["finite_stepped"] = engine.global_steps == 1
        before = parameters(engine)
        backward(engine, rank, 1, device, poison=float("inf") if rank == 1 else None)
        try:
            guarded_step(engine, device)
        except GnnZeroError as exc:
            out["error"] = str(exc)
        out["params_unchanged"] = unchanged(before, parameters(engine))
        out["global_steps"] = engine.global_steps
    except Exception as exc:  # recorded so one broken case does not hide the others
        out["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        engine.destroy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--local_rank", type=int, default=-1)
    args = parser.parse_args()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    from gnnzero.engine.runtime import init_distributed
    from gnnzero.utils.dist import barrier, gather_objects

    rank, world, device = init_distributed(args.local_rank)
    results = {}
    for case in TWO_RANK_CASES:
        results[case] = gather_objects(run_two_rank_case(case, rank, device))
        if rank == 0:
            print(case, json.dumps(results[case][0]), flush=True)
    if rank == 0:
        with open(os.path.join(args.out_dir, f"guards_w{world}.json"), "w",
                  encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    barrier()


if __name__ == "__main__":
    main()
