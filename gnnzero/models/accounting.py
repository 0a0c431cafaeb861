"""Exact parameter counts and the ZeRO paper's per-rank model-state memory.

ZeRO (Rajbhandari et al., 2020), Adam with mixed precision: parameters 2Ψ,
gradients 2Ψ, optimizer states K=12 Ψ (fp32 master weights, momentum,
variance).  In fp32 there is no master copy: 4Ψ + 4Ψ + 8Ψ.  Per rank, with N
data-parallel ranks:

=======  ===========================  ============================
stage    mixed precision (bf16/fp16)  fp32
=======  ===========================  ============================
0        2Ψ + 2Ψ + 12Ψ = 16Ψ          4Ψ + 4Ψ + 8Ψ = 16Ψ
1        2Ψ + 2Ψ + 12Ψ/N              4Ψ + 4Ψ + 8Ψ/N
2        2Ψ + (2Ψ + 12Ψ)/N            4Ψ + (4Ψ + 8Ψ)/N
3        (2Ψ + 2Ψ + 12Ψ)/N            (4Ψ + 4Ψ + 8Ψ)/N
=======  ===========================  ============================

Offload (ZeRO-Offload / ZeRO-Infinity) moves to the host: with
``offload_optimizer`` the optimizer states and, from stage 2 on, the gradient
partitions (DeepSpeed reduces them straight into host buffers); with
``offload_params`` (stage 3) the parameter partitions.

How this compares with DeepSpeed's own estimators (v0.19,
``stage_1_and_2.estimate_zero2_model_states_mem_needs`` and
``stage3.estimate_zero3_model_states_mem_needs``), which assume mixed precision:

* stage 2 without offload: DeepSpeed says 2Ψ + 18Ψ/N; it also counts a 4Ψ/N fp32
  gradient partition the paper leaves out (paper: 2Ψ + 14Ψ/N).
* stage 2 with optimizer offload: both 2Ψ.
* stage 3 without offload: DeepSpeed 4L + 18Ψ/N (L = the largest module's
  parameter count, gathered for a forward); paper 16Ψ/N, 2Ψ/N less.
* stage 3 with optimizer offload: DeepSpeed 4L + 2Ψ/N, here 2Ψ/N; with parameter
  offload too: DeepSpeed 4L, here 0.  The 4L term is working memory for the
  gathered layer, not a model state.
* DeepSpeed has no stage 0/1 or fp32 estimator.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Union

from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of distinct parameters (shared weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class ModelStateBytes:
    """Per-rank accelerator bytes of parameters, gradients and optimizer states."""

    params: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def zero_model_state_bytes(num_params: Union[int, nn.Module], stage: int, world_size: int = 1,
                           precision: str = "bf16", offload_optimizer: bool = False,
                           offload_params: bool = False,
                           persistent_params: int = 0) -> ModelStateBytes:
    """Per-rank model-state bytes on the accelerator for a ZeRO ``stage`` (ZeRO paper formulas).

    ``num_params`` is a parameter count or a model (counted with ``count_parameters``).
    ``persistent_params``: under ZeRO-3, the parameters DeepSpeed keeps whole on every
    rank (``stage3_param_persistence_threshold``; :func:`persistent_parameter_count`),
    each besides its partition, as DeepSpeed keeps both; their gradients and optimizer
    states are still partitioned.
    """
    if isinstance(num_params, nn.Module):
        num_params = count_parameters(num_params)
    if not isinstance(num_params, int) or num_params < 0:
        raise ValueError(f"num_params must be a model or an integer >= 0, got {num_params!r}")
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if offload_optimizer and stage == 0:
        raise ValueError("offload_optimizer needs ZeRO stage >= 1; raise stage or drop the offload")
    if offload_params and stage != 3:
        raise ValueError("offload_params needs ZeRO stage 3; use stage=3 or drop the offload")
    psi, n = float(num_params), float(world_size)
    p_bytes, g_bytes, k_bytes = (4, 4, 8) if precision == "fp32" else (2, 2, 12)
    params, grads, optim = p_bytes * psi, g_bytes * psi, k_bytes * psi
    if stage >= 1:
        optim /= n
    if stage >= 2:
        grads /= n
    if stage >= 3:
        # A persistent parameter keeps its full tensor besides its partition (ds_tensor).
        persistent = float(min(max(persistent_params, 0), num_params))
        params = p_bytes * (persistent + psi / n)
    if offload_optimizer:
        optim = 0.0
        if stage >= 2:
            grads = 0.0
    if offload_params:
        params = 0.0
    return ModelStateBytes(params, grads, optim)


def persistent_parameter_count(module: nn.Module) -> int:
    """Elements of the parameters ZeRO-3 marked persistent (``ds_persist``: not partitioned,
    never gathered); 0 for a module outside ZeRO-3."""
    return int(sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters()
                   if getattr(p, "ds_persist", False)))


def zero_memory_table(num_params: Union[int, nn.Module], world_size: int,
                      precision: str = "bf16") -> list[dict]:
    """One row per ZeRO stage: per-rank model-state bytes, to pick a stage before launching."""
    return [{"stage": s, "world_size": world_size, "precision": precision,
             **zero_model_state_bytes(num_params, s, world_size, precision).as_dict()}
            for s in range(4)]
