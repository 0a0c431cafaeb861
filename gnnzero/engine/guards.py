"""Stop the run before a non-finite gradient reaches the weights or a checkpoint.

A finite loss can still give inf/NaN gradients (an overflow in backward, an
extreme feature row).  What DeepSpeed (read in 0.19.8) does with them on its own
depends on the stage and precision:

* ZeRO-0, fp32: the optimizer is the plain torch one and ``engine.step()``
  applies them; the weights become NaN and the next checkpoint saves them.
* everything else (ZeRO-0 bf16, ZeRO-1/2/3 fp32 and bf16): the ZeRO /
  bf16 optimizer sees a non-finite gradient norm and skips the update, raising
  nothing (ZeRO-1/2/3 log "OVERFLOW! Skipping step" on rank 0, the bf16 optimizers
  not even that); ``engine.skipped_steps`` += 1 and ``global_steps`` advances, so a run
  whose gradients stay bad "trains" to the end and checkpoints as if healthy.
  (ZeRO-1/2 in bf16 with ``"bf16": {"check_grad_overflow": false}`` and
  ZeRO-1/2 with ``"compute_grad_norm": false`` apply them.)

:func:`check_finite_gradients` makes every case the same: called on every rank
after ``engine.backward(loss)`` at an accumulation boundary and before
``engine.step()``, it raises :class:`~gnnzero.errors.GnnZeroError` on all ranks
together when any rank's gradient norm, or the loss it was given, is not finite.
(fp16 is the exception: there an overflow is expected, and DeepSpeed's loss scaler
skips the step and lowers the scale; :mod:`gnnzero.engine.loss_scale` reports it.)

It is cheap: each rank takes the norm of the gradient data it already holds for
the coming step (no gathering: under ZeRO-3 it reads the rank's own partition of
every gradient), then one all-reduce of three flags tells every rank how many
ranks saw a bad value: one collective and one host sync per optimizer step.  At the boundary DeepSpeed has already reduced the
gradients inside ``engine.backward`` (``DeepSpeedEngine._backward_epilogue`` ->
``allreduce_gradients``), so the data read here is exactly what ``step()`` will
use.  (With DeepSpeed's ``"managed_gradient_accumulation": false`` the reduction moves
into ``step()``, no boundary is seen before it and the guard does nothing; gnnzero does
not use that mode.)

======================  ===============================================  =====================
optimizer               where the rank's gradients are before step()      holds
======================  ===============================================  =====================
torch / FP16 wrappers   ``param.grad`` of every parameter                 all (all-reduced)
BF16_Optimizer          ``fp32_groups_gradient_flat_partition``           own partition
ZeRO-1/2                ``averaged_gradients`` (offload:                  own partition
                        ``single_partition_of_fp32_groups[i].grad``)
ZeRO-3                  ``grad_partitions_flat_buffer`` (offload:         own partition
                        ``fp32_partitioned_groups_flat[i].grad``)
======================  ===============================================  =====================
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

import torch
from torch import Tensor

from ..errors import GnnZeroError
from ..utils.dist import all_reduce_tensor, rank_world
from . import loss_scale


def _zero_optimizer_classes():
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    return BF16_Optimizer, DeepSpeedZeroOptimizer, DeepSpeedZeroOptimizer_Stage3


def _grads_of(tensors) -> list[Tensor]:
    return [t.grad for t in tensors if t is not None and t.grad is not None]


def _wait_for_offload_copies(optimizer) -> None:
    """Offloaded gradients are copied to the CPU without blocking: wait, as ``step()`` does."""
    wait = getattr(optimizer, "_wait_for_offload_copies", None)
    if callable(wait):
        wait()


def local_gradients(engine) -> list[Tensor]:
    """The gradient data this rank holds for the coming ``engine.step()``; no communication.

    Valid after ``engine.backward`` at an accumulation boundary and before ``engine.step``
    (DeepSpeed clears these buffers in ``step``).  Under ZeRO-1/2/3 and the bf16 optimizer
    it is the rank's own partition (the ranks' partitions together are the whole
    gradient); otherwise every rank holds the whole, already all-reduced, gradient.
    """
    bf16_optimizer, zero12, zero3 = _zero_optimizer_classes()
    optimizer = engine.optimizer
    if isinstance(optimizer, zero3):
        if getattr(optimizer, "offload_optimizer", False):
            _wait_for_offload_copies(optimizer)
            return _grads_of(optimizer.fp32_partitioned_groups_flat)
        return [optimizer.grad_partitions_flat_buffer]
    if isinstance(optimizer, bf16_optimizer):
        return list(optimizer.fp32_groups_gradient_flat_partition)
    if isinstance(optimizer, zero12):
        if optimizer.cpu_offload:
            _wait_for_offload_copies(optimizer)
            return _grads_of(optimizer.single_partition_of_fp32_groups)
        return [grad for group in optimizer.averaged_gradients.values() if group is not None
                for grad in group if grad is not None]
    if engine.zero_optimization_stage() > 0:
        raise TypeError(f"check_finite_gradients does not know where "
                        f"{type(optimizer).__name__} keeps the gradients at ZeRO stage "
                        f"{engine.zero_optimization_stage()}")
    return [p.grad for p in engine.module.parameters() if p.grad is not None]


def _foreach_norms(tensors: list[Tensor]) -> list[Tensor]:
    try:  # one fused pass per device and dtype (as clip_grad_norm_ does)
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except (AttributeError, RuntimeError, TypeError):
        return [torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors]


def local_gradient_norm(tensors: list[Tensor]) -> Tensor:
    """L2 norm of ``tensors`` taken as one vector, accumulated in fp32 as DeepSpeed does, as a
    0-d tensor (no host sync): ``nan`` when a value is NaN, ``inf`` when one is infinite (or
    the norm overflows)."""
    groups: dict[tuple, list[Tensor]] = defaultdict(list)
    for tensor in tensors:
        if tensor.numel():
            groups[(tensor.device, tensor.dtype)].append(tensor)
    if not groups:
        return torch.zeros((), dtype=torch.float32)
    per_group = [torch.linalg.vector_norm(torch.stack(_foreach_norms(group)))
                 for group in groups.values()]
    first = per_group[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(first) for n in per_group]))


def check_finite_gradients(engine, step: int, epoch: int, last_checkpoint: Optional[str],
                           loss: Optional[Tensor] = None) -> None:
    """Raise on every rank when any rank's gradient norm (or ``loss``) is NaN/inf, before
    ``engine.step()``.

    Call on every rank (it is a collective) after ``engine.backward(loss)``; between
    accumulation boundaries, where there is no step to guard, it returns at once on
    every rank alike.  ``step`` is the optimizer step about to be taken
    (``engine.global_steps + 1``); ``loss`` is the sum of this rank's (detached) micro-batch
    losses since the last step: a non-finite loss has reached backward but, checked here,
    never the weights.  One all-reduce of three flags and one host sync per optimizer step,
    none per micro-step.  The message counts the ranks whose own gradient data held the
    bad value: under ZeRO-0 that is every rank once the all-reduce has spread it; under
    ZeRO-1/2/3 the owners of the affected partitions.
    """
    if not engine.is_gradient_accumulation_boundary() or loss_scale.fp16(engine):
        return  # fp16: an overflow is the loss scaler's to skip (loss_scale.py), on all ranks
    norm = local_gradient_norm(local_gradients(engine))
    loss = torch.zeros((), device=norm.device) if loss is None else loss.detach().float()
    flags = torch.stack([~torch.isfinite(norm), torch.isnan(norm),
                         ~torch.isfinite(loss.to(norm.device))]).double()
    bad_ranks, nan_ranks, bad_loss_ranks = all_reduce_tensor(flags).tolist()
    if not (bad_ranks or bad_loss_ranks):
        return
    world = rank_world()[1]
    fixes = ("last good checkpoint: {}; lower --lr, check the features for extreme values, or "
             "set --grad-clip against large finite gradients (clipping does not repair inf/NaN)"
             ).format(last_checkpoint or "none")
    if bad_loss_ranks:
        raise GnnZeroError(f"loss became non-finite at optimizer step {step} (epoch {epoch})"
                           f" on {int(bad_loss_ranks)} of {world} rank(s); the step was not "
                           f"applied; {fixes}")
    kind = "nan" if nan_ranks else "inf"
    raise GnnZeroError(
        f"gradient norm became {kind} at optimizer step {step} (epoch {epoch}) on "
        f"{int(bad_ranks)} of {world} rank(s); the step was not applied; {fixes}")
