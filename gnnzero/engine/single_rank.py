"""A data-parallel world of one: no gradient all-reduce that cannot change anything.

At an accumulation boundary DeepSpeed reduces every gradient over the data-parallel group.
On one rank that round trip returns the gradients unchanged, yet it is real work: under
gloo a world of one still copies the buffer, and flatten + unflatten touch every gradient
twice.

* ZeRO-0 (``buffered_allreduce_fallback``, 1.2 ms of a 43 ms GraphSAGE step on a CPU
  core): DeepSpeed skips it itself when it runs without a distributed backend
  (``enable_backward_allreduce = False``); :func:`skip_single_rank_allreduce` does the
  same when the data-parallel group has one rank.
* ZeRO-1/2 keep ``allreduce_gradients``, which also moves the gradients into the
  optimizer's partition; what they do per bucket (``buffered_reduce_fallback``: flatten,
  all-reduce, copy back; DeepSpeed 0.19.8 with ``contiguous_gradients`` off, as gnnzero sets
  on CPU) is skipped by :func:`skip_single_rank_bucket_reduction` where it is the identity:
  the bucket already in the communication dtype (no rounding round trip), no sequence or
  expert parallelism.
"""
from __future__ import annotations


def skip_single_rank_allreduce(engine) -> bool:
    """Turn off ``engine``'s post-backward gradient all-reduce when it cannot change anything:
    ZeRO stage 0 on a data-parallel group of one rank.  Returns whether it did."""
    from deepspeed.runtime.zero.config import ZeroStageEnum

    if engine.zero_optimization_stage() != ZeroStageEnum.disabled or engine.dp_world_size != 1:
        return False
    engine.enable_backward_allreduce = False
    return True


def skip_single_rank_bucket_reduction(engine) -> bool:
    """ZeRO-1/2 on a data-parallel group of one rank: each gradient bucket's all-reduce
    (an identity there) is not run.  Returns whether the optimizer was changed."""
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    optimizer = engine.optimizer
    if (not isinstance(optimizer, DeepSpeedZeroOptimizer) or engine.dp_world_size != 1
            or optimizer.sequence_parallel_size != 1 or optimizer.has_moe_layers):
        return False
    reduce = optimizer.buffered_reduce_fallback

    def reduce_unless_identity(rank, grads, communication_data_type, *args, **kwargs):
        if any(grad.dtype != communication_data_type for grad in grads):
            return reduce(rank, grads, communication_data_type, *args, **kwargs)
        return None   # one rank, same dtype: the all-reduce would return the bucket as is

    optimizer.buffered_reduce_fallback = reduce_unless_identity
    return True


def skip_single_rank_reductions(engine) -> None:
    """Both of the above, where they apply."""
    skip_single_rank_allreduce(engine)
    skip_single_rank_bucket_reduction(engine)
