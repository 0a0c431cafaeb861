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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of distinct parameters (shared weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class ModelStateBytes:
    """Per-rank bytes of parameters, gradients and optimizer states."""

    params: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def zero_model_state_bytes(num_params: int, stage: int, world_size: int = 1,
                           precision: str = "bf16", offload_optimizer: bool = False
                           ) -> ModelStateBytes:
    """Per-rank model-state bytes on the accelerator for a ZeRO ``stage`` (ZeRO paper formulas).

    ``offload_optimizer`` moves the optimizer states (and, from stage 2 on, the
    gradients' fp32 copy) to the host; they are then not counted here.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    psi, n = float(num_params), float(world_size)
    half = precision != "fp32"
    p_bytes, g_bytes, k_bytes = (2, 2, 12) if half else (4, 4, 8)
    params, grads, optim = p_bytes * psi, g_bytes * psi, k_bytes * psi
    if stage >= 1:
        optim /= n
    if stage >= 2:
        grads /= n
    if stage >= 3:
        params /= n
    if offload_optimizer:
        optim = 0.0
    return ModelStateBytes(params, grads, optim)


def zero_memory_table(num_params: int, world_size: int, precision: str = "bf16") -> list[dict]:
    """One row per ZeRO stage: per-rank model-state bytes, to pick a stage before launching."""
    return [{"stage": s, "world_size": world_size, "precision": precision,
             **zero_model_state_bytes(num_params, s, world_size, precision).as_dict()}
            for s in range(4)]
