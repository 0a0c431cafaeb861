"""ZeRO-3 with every parameter persistent: light availability checks instead of DeepSpeed's
per-module fetch and release hooks.

DeepSpeed's ZeRO-3 hangs four hooks on every submodule, parameter-free ones included:
gather its parameters before forward, release them after, and the same around backward.
Parameters below ``stage3_param_persistence_threshold`` are *persistent*: every rank
keeps them whole, so those hooks gather and release nothing.  GNN layers are that size
(a 128 x 128 map is 16k values against the 100k threshold of ds_configs/zero3*.json),
yet the hooks are Python around every module call: on a CPU they took a GraphSAGE 128 x 3
Cluster-GCN step from 0.89x to 0.72x of the plain loop's throughput
(benchmarks/results/zero3_hooks_cpu.md).

When every parameter of the model is persistent, :func:`replace_fetch_hooks` removes
DeepSpeed's module hooks (``DeepSpeedZeRoOffload._remove_module_hooks``, what
``engine.destroy()`` does) and leaves the rest of ZeRO-3 as it is: gradients are still
reduce-scattered by their per-parameter hooks, the optimizer still updates each rank's
fp32 partition, and ``step()`` still all-gathers the updated persistent parameters.

Persistent parameters are released in a few places all the same: at the start of
``step()`` (a skipped fp16 step returns before gathering them back), on leaving
``deepspeed.zero.GatheredParameters`` and around checkpoint loading.  Without the hooks
nothing would gather them again, so each module that owns parameters gets one cheap
forward pre-hook that gathers its own released parameters (every rank reaches it at the
same point, so the all-gather is matched).
"""
from __future__ import annotations

import torch


def _offload(engine):
    """DeepSpeed's ZeRO-3 parameter coordinator of ``engine``, or None when it has none."""
    optimizer = getattr(engine, "optimizer", None)
    return getattr(optimizer, "parameter_offload", None)


def all_persistent(module: torch.nn.Module) -> bool:
    """Whether DeepSpeed marked every parameter of ``module`` persistent (``ds_persist``)."""
    params = list(module.parameters())
    return bool(params) and all(getattr(p, "ds_persist", False) for p in params)


def replace_fetch_hooks(engine) -> bool:
    """Under ZeRO-3 with every parameter persistent, swap DeepSpeed's per-module hooks for a
    pre-forward gather of released parameters on the modules that own some; True when it
    did."""
    offload = _offload(engine)
    if (offload is None or not hasattr(offload, "_remove_module_hooks")
            or not all_persistent(engine.module)):
        return False
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    released_status = ZeroParamStatus.NOT_AVAILABLE

    def gather_released(module: torch.nn.Module, _args) -> None:   # every forward: kept light
        released = [p for p in module.parameters(recurse=False) if p.ds_status == released_status]
        if released:
            released[0].all_gather(param_list=released)

    offload._remove_module_hooks()
    offload.forward_hooks, offload.backward_hooks = [], []
    for module in engine.module.modules():
        if next(module.parameters(recurse=False), None) is not None:
            offload.forward_hooks.append(module.register_forward_pre_hook(gather_released))
    return True
