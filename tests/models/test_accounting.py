"""ZeRO model-state memory: the paper's formulas, and DeepSpeed's own estimators where they agree."""
from __future__ import annotations

import pytest

from gnnzero.models import build_model, count_parameters, zero_memory_table, zero_model_state_bytes

PSI = 1_234_567


def paper_bytes(stage: int, n: int, precision: str) -> float:
    """The issue's table, written out per stage (mixed-precision Adam; fp32 Adam)."""
    if precision == "fp32":
        return {0: 16 * PSI, 1: 4 * PSI + 4 * PSI + 8 * PSI / n,
                2: 4 * PSI + (4 * PSI + 8 * PSI) / n, 3: 16 * PSI / n}[stage]
    return {0: 16 * PSI, 1: 4 * PSI + 12 * PSI / n, 2: 2 * PSI + 14 * PSI / n,
            3: 16 * PSI / n}[stage]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("world", [1, 2, 8])
def test_zero_formulas(precision, stage, world):
    got = zero_model_state_bytes(PSI, stage, world, precision)
    assert got.total == pytest.approx(paper_bytes(stage, world, precision), rel=1e-12)


def test_zero_formula_components_mixed_precision():
    got = zero_model_state_bytes(PSI, 2, 4, "bf16")
    assert (got.params, got.grads, got.optimizer) == pytest.approx((2 * PSI, 2 * PSI / 4,
                                                                    12 * PSI / 4))


def test_memory_table_and_model_argument():
    model = build_model("sage", 50, 32, 4, 3, rank=8, share_weights=True)
    table = zero_memory_table(model, 2, "bf16")
    assert [row["stage"] for row in table] == [0, 1, 2, 3]
    psi = count_parameters(model)
    assert [row["total"] for row in table] == pytest.approx(
        [16 * psi, 4 * psi + 6 * psi, 2 * psi + 7 * psi, 8 * psi])


@pytest.mark.parametrize("kwargs,word", [
    (dict(stage=4), "stage"), (dict(world_size=0), "world_size"),
    (dict(precision="fp8"), "precision"), (dict(stage=0, offload_optimizer=True), "offload"),
    (dict(stage=2, offload_params=True), "offload_params"),
])
def test_bad_arguments(kwargs, word):
    args = {**dict(num_params=PSI, stage=2, world_size=2, precision="bf16"), **kwargs}
    with pytest.raises(ValueError, match=word):
        zero_model_state_bytes(**args)


# ------------------------------------------------------------- DeepSpeed's estimators (v0.19)
deepspeed = pytest.importorskip("deepspeed")
from deepspeed.runtime.zero import stage3, stage_1_and_2  # noqa: E402


@pytest.mark.parametrize("world", [1, 2, 4, 16])
def test_stage2_matches_deepspeed(world):
    # With optimizer offload both say 2Ψ (fp16 params; grads and optimizer on the host).
    _, ds_gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
        PSI, num_gpus_per_node=world, cpu_offload=True)
    assert zero_model_state_bytes(PSI, 2, world, "bf16", offload_optimizer=True).total == ds_gpu
    # Without offload DeepSpeed adds a 4Ψ/N fp32 gradient partition: 2Ψ + 18Ψ/N vs 2Ψ + 14Ψ/N.
    _, ds_gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
        PSI, num_gpus_per_node=world, cpu_offload=False)
    ours = zero_model_state_bytes(PSI, 2, world, "bf16").total
    assert ds_gpu - ours == pytest.approx(4 * PSI / world, abs=1)


@pytest.mark.parametrize("world", [1, 2, 4, 16])
def test_stage3_matches_deepspeed_less_largest_layer(world):
    model = build_model("sage", 300, 64, 5, 4, rank=8, share_weights=True)
    psi, largest = stage3.model_to_params(model)
    assert psi == count_parameters(model)  # DeepSpeed dedups shared tensors by data_ptr too
    for offload_params in (False, True):
        _, ds_gpu, largest_bytes = stage3.estimate_zero3_model_states_mem_needs(
            psi, largest, num_gpus_per_node=world, cpu_offload=True,
            cpu_offload_params=offload_params)
        assert largest_bytes == 4 * largest
        ours = zero_model_state_bytes(model, 3, world, "bf16", offload_optimizer=True,
                                      offload_params=offload_params).total
        assert ds_gpu - largest_bytes == pytest.approx(ours, abs=1)
    _, ds_gpu, largest_bytes = stage3.estimate_zero3_model_states_mem_needs(
        psi, largest, num_gpus_per_node=world, cpu_offload=False)
    ours = zero_model_state_bytes(model, 3, world, "bf16").total
    assert ds_gpu - largest_bytes - ours == pytest.approx(2 * psi / world, abs=1)
