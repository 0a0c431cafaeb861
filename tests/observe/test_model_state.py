"""Model-state bytes counted from the tensors a real in-process DeepSpeed engine holds, against
the ZeRO paper's formulas computed by hand here."""
from __future__ import annotations

import socket

import pytest
import torch

from gnnzero.observe.model_state import count_model_state_bytes, totals


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def one_rank_world():
    """A single-rank gloo process group in this process (what `deepspeed` would set up)."""
    import deepspeed

    mp = pytest.MonkeyPatch()
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        mp.setenv(key, value)
    deepspeed.init_distributed(dist_backend="gloo")
    yield
    mp.undo()


def _engine_after_two_steps(stage: int, precision: str):
    import deepspeed

    from gnnzero.models import build_model

    torch.manual_seed(0)
    model = build_model("sage", 40, 96, 5, 2, dropout=0.0)
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "steps_per_print": 10**9,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
              "bf16": {"enabled": precision == "bf16"}, "zero_optimization": {"stage": stage}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()),
                                      config=config)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x, edges = torch.randn(60, 40, dtype=dtype), torch.randint(0, 60, (2, 240))
    counted = {}
    for _ in range(2):
        engine.backward(engine(x, edges).float().pow(2).mean())
        after_backward = totals(count_model_state_bytes(engine.module, engine.optimizer))
        engine.step()
        after_step = totals(count_model_state_bytes(engine.module, engine.optimizer))
        counted = {k: max(after_backward[k], after_step[k]) for k in after_backward}
    psi = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    return counted, psi


def test_stage0_fp32_adamw_holds_exactly_16_psi(one_rank_world):
    counted, psi = _engine_after_two_steps(0, "fp32")
    # fp32 Adam without ZeRO: 4 bytes parameter + 4 gradient + 8 (exp_avg, exp_avg_sq).
    assert counted["params"] == 4 * psi
    assert counted["gradients"] == 4 * psi
    assert counted["master_params"] == 0
    assert counted["optimizer_states"] == 8 * psi
    assert counted["other"] == 0


def test_stage2_bf16_matches_zero_formula(one_rank_world):
    counted, psi = _engine_after_two_steps(2, "bf16")
    # Mixed-precision ZeRO-2 on one rank: 2 + 2 + 12 (fp32 master 4 + Adam 8) bytes per parameter;
    # flat buffers may be padded to an alignment of a few elements.
    assert 2 * psi <= counted["params"] <= 2 * psi + 64
    assert 2 * psi <= counted["gradients"] <= 2 * psi + 64
    assert 4 * psi <= counted["master_params"] <= 4 * psi + 128
    assert 8 * psi <= counted["optimizer_states"] <= 8 * psi + 256


def test_stage3_fp32_partitions_and_keeps_an_fp32_master_copy(one_rank_world):
    counted, psi = _engine_after_two_steps(3, "fp32")
    # ZeRO-3 holds each parameter as its ds_tensor partition; DeepSpeed also keeps a
    # separate fp32 master partition even for an fp32 model: 4 + 4 + 4 + 8 = 20 bytes per
    # parameter, 1.25x the paper's fp32 formula (which assumes no master copy).
    assert 4 * psi <= counted["params"] <= 4 * psi + 256
    assert 4 * psi <= counted["master_params"] <= 4 * psi + 256
    assert 8 * psi <= counted["optimizer_states"] <= 8 * psi + 512
    assert counted["gradients"] >= 4 * psi


def test_zero3_persistent_parameters_are_counted_as_deepspeed_marks_them(one_rank_world):
    import deepspeed

    from gnnzero.models import build_model
    from gnnzero.models.accounting import persistent_parameter_count, zero_model_state_bytes

    torch.manual_seed(0)
    model = build_model("sage", 40, 96, 5, 2, dropout=0.0)
    threshold = 500  # the biases (96, 5) and the 96 x 5 weights persist, the 40 x 96 ones not
    expected = sum(p.numel() for p in model.parameters() if p.numel() <= threshold)
    assert 0 < expected < sum(p.numel() for p in model.parameters())
    config = {"train_micro_batch_size_per_gpu": 1, "steps_per_print": 10**9,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
              "zero_optimization": {"stage": 3,
                                    "stage3_param_persistence_threshold": threshold}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()),
                                      config=config)
    assert persistent_parameter_count(engine.module) == expected
    # The formula on 4 ranks: every parameter's quarter, plus the persistent ones whole.
    psi = sum(p.ds_numel for p in engine.module.parameters())
    bytes_ = zero_model_state_bytes(psi, 3, 4, "fp32", persistent_params=expected)
    assert bytes_.params == 4 * (expected + psi / 4)
    assert bytes_.grads == 4 * psi / 4 and bytes_.optimizer == 8 * psi / 4
