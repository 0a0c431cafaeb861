"""ZeRO-3 with every parameter persistent: DeepSpeed's per-module hooks are replaced
(gnnzero/engine/zero3_hooks.py), training still equals plain PyTorch, and parameters
DeepSpeed releases are gathered again before the next forward.

Real DeepSpeed engines in this process (a world of one, CPU/gloo) on a small GraphSAGE;
the 2-rank case is in tests/engine/test_trainer.py.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gnnzero.engine.batches import node_loss, prepare_batch
from gnnzero.engine.zero3_hooks import all_persistent
from gnnzero.models import forward_batch
from tests.engine.test_guards import graph
from tests.helpers import world_of_one_process_group

STEPS = 6
CLIP = 0.05     # below these steps' gradient norms: the clipping path is exercised


def _config(persistence: int) -> dict:
    # torch's AdamW (FusedAdam is a CUDA kernel), as the plain reference below.
    return {"train_micro_batch_size_per_gpu": 1, "gradient_clipping": CLIP,
            "steps_per_print": 10 ** 9,
            "optimizer": {"type": "AdamW", "params": {"lr": 0.01, "torch_adam": True,
                                                      "weight_decay": 0.01}},
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": persistence}}


def _model() -> torch.nn.Module:
    from gnnzero.models import build_model

    torch.manual_seed(0)
    return build_model("sage", 8, 16, 3, 3, dropout=0.0)


@pytest.fixture(scope="module")
def world():
    with world_of_one_process_group() as rank_world_device:
        yield rank_world_device


def _engine(world, persistence: int = 100_000):
    from gnnzero.engine.runtime import initialize_engine

    return initialize_engine(_model(), _config(persistence))[0]


def _loss(model, micro: int, device) -> torch.Tensor:
    batch = prepare_batch(graph(0, micro), device, torch.float32)
    return node_loss(forward_batch(model, batch), batch)


def _deepspeed_hooks(module: torch.nn.Module) -> list[str]:
    """Names of the DeepSpeed hook functions on ``module`` (forward pre and post)."""
    hooks = list(module._forward_pre_hooks.values()) + list(module._forward_hooks.values())
    return [h.__qualname__ for h in hooks if "parameter_offload" in h.__code__.co_filename]


def test_persistent_model_drops_deepspeed_module_hooks(world):
    engine = _engine(world)
    assert all_persistent(engine.module)
    for module in engine.module.modules():
        assert not _deepspeed_hooks(module), type(module).__name__


def test_partitioned_model_keeps_deepspeed_module_hooks(world):
    engine = _engine(world, persistence=0)
    assert not all_persistent(engine.module)
    assert _deepspeed_hooks(engine.module)


@pytest.mark.parametrize("persistence", [100_000, 0], ids=["persistent", "partitioned"])
def test_zero3_training_equals_plain_pytorch(world, persistence):
    """Losses and parameters of 6 clipped AdamW steps against torch's own loop."""
    _, _, device = world
    engine = _engine(world, persistence)
    reference = _model()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.01)
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
    from gnnzero.engine.runtime import parameter_fingerprint

    got = parameter_fingerprint(engine)
    params = [p.detach().double() for p in reference.parameters()]
    assert got["sum"] == pytest.approx(float(sum(p.sum() for p in params)), rel=1e-6)
    assert got["sum_sq"] == pytest.approx(float(sum(p.pow(2).sum() for p in params)), rel=1e-6)


def test_released_parameters_are_gathered_before_the_next_forward(world):
    """What a skipped fp16 step, ``GatheredParameters`` and a checkpoint load leave behind:
    persistent parameters partitioned.  The next forward (the model's, or one layer's, as
    layer-wise inference calls it) sees them whole again."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    from gnnzero.engine.runtime import parameter_fingerprint

    _, _, device = world
    engine = _engine(world)
    batch = prepare_batch(graph(0, 0), device, torch.float32)
    engine.eval()
    with torch.no_grad():
        before = forward_batch(engine, batch)
        first_layer = engine.module.convs[0](batch.x, batch.edge_index)
    for release in (engine.optimizer._partition_all_parameters,
                    lambda: parameter_fingerprint(engine)):
        release()
        assert any(p.ds_status == ZeroParamStatus.NOT_AVAILABLE
                   for p in engine.module.parameters())
        with torch.no_grad():
            torch.testing.assert_close(forward_batch(engine, batch), before, rtol=0, atol=0)
        release()
        with torch.no_grad():
            layer = engine.module.convs[0](batch.x, batch.edge_index)
        torch.testing.assert_close(layer, first_layer, rtol=0, atol=0)
    engine.train()
    loss = F.cross_entropy(forward_batch(engine, batch), batch.y)
    engine.backward(loss)
    engine.step()
