"""ZeRO-0 on one rank skips DeepSpeed's post-backward gradient all-reduce, ZeRO-1/2 their
per-bucket all-reduce (gnnzero/engine/single_rank.py), and all still train exactly as plain
PyTorch.

Real DeepSpeed engines in this process (a world of one, CPU/gloo), built from the
shipped configs as launch/train.py builds them; the 2-rank cases, where the all-reduce
must stay, are the engine worker's (tests/engine/test_runtime.py).
"""
from __future__ import annotations

import pytest
import torch

from gnnzero.engine.batches import node_loss, prepare_batch
from gnnzero.engine.ds_config import EngineOverrides, apply_overrides, finalize_for_device
from gnnzero.engine.ds_config import load_ds_config
from gnnzero.models import forward_batch
from tests.engine.test_guards import graph
from tests.helpers import REPO, world_of_one_process_group

STEPS, CLIP = 6, 0.05


@pytest.fixture(scope="module")
def world():
    with world_of_one_process_group() as rank_world_device:
        yield rank_world_device


def _model() -> torch.nn.Module:
    from gnnzero.models import build_model

    torch.manual_seed(0)
    return build_model("sage", 8, 16, 3, 3, dropout=0.0)


def _engine(stage: int, precision: str = "fp32"):
    from gnnzero.engine.runtime import initialize_engine

    config = apply_overrides(load_ds_config(str(REPO / "ds_configs" / "zero2.json")),
                             EngineOverrides(zero_stage=stage, precision=precision,
                                             grad_clip=CLIP))
    return initialize_engine(_model(), finalize_for_device(config, "cpu"))[0]


def _loss(model, micro: int, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    batch = prepare_batch(graph(0, micro), device, dtype)
    return node_loss(forward_batch(model, batch), batch)


def _count_reductions(engine, monkeypatch) -> list:
    calls: list = []
    real = engine.buffered_allreduce_fallback
    monkeypatch.setattr(engine, "buffered_allreduce_fallback",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_zero0_on_one_rank_does_not_all_reduce(world, monkeypatch, precision):
    engine = _engine(0, precision)
    calls = _count_reductions(engine, monkeypatch)
    from gnnzero.engine.runtime import compute_dtype

    engine.backward(_loss(engine, 0, world[2], compute_dtype(engine)))
    engine.step()
    assert not engine.enable_backward_allreduce and calls == []


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_zero12_on_one_rank_reduce_no_bucket(world, monkeypatch, stage, precision):
    """ZeRO-1/2's reduction also fills the optimizer's gradient partitions: it stays, but
    the bucket all-reduce inside it (flatten, all-reduce, copy back) does not run."""
    from gnnzero.engine.runtime import compute_dtype

    engine = _engine(stage, precision)
    assert engine.enable_backward_allreduce
    calls: list = []
    real = engine.optimizer.allreduce_no_retain
    monkeypatch.setattr(engine.optimizer, "allreduce_no_retain",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    before = [p.detach().clone() for p in engine.module.parameters()]
    engine.backward(_loss(engine, 0, world[2], compute_dtype(engine)))
    engine.step()
    assert calls == []
    assert all(not torch.equal(p, b) for p, b in zip(engine.module.parameters(), before))


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_one_rank_equals_plain_pytorch(world, stage):
    """Losses and parameters of 6 clipped AdamW steps against torch's own loop."""
    device = world[2]
    engine = _engine(stage)
    reference = _model()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.01, betas=(0.9, 0.999),
                                  eps=1e-8, weight_decay=5e-4)
    for micro in range(STEPS):
        loss = _loss(engine, micro, device)
        engine.backward(loss)
        engine.step()
        expected = _loss(reference, micro, device)
        expected.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad()
        torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=0)
    for got, want in zip(engine.module.parameters(), reference.parameters()):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=1e-7)
