"""Model-state bytes counted from the tensors a DeepSpeed engine (or a plain optimizer) holds.

What DeepSpeed 0.19 keeps per rank (read from ``deepspeed/runtime/zero/``):

* stage 0, fp32: the module's parameters and ``.grad``; ``torch.optim.AdamW.state``.
* stage 0, bf16 (``BF16_Optimizer``): ``bf16_groups_flat`` (the parameters are views
  of it), fp32 gradient accumulators ``fp32_groups_gradients_flat``, fp32 master
  partitions ``fp32_groups_flat_partition`` and the inner optimizer's state.
* stage 1/2 (``DeepSpeedZeroOptimizer``): ``bit16_groups_flat`` (parameters),
  ``single_partition_of_fp32_groups`` (fp32 master partition, a *copy* even when the
  model is fp32), ``averaged_gradients`` / ``grads_in_partition`` (gradient
  partitions), ``ipg_buckets[*].buffer`` (reduce buckets) and the inner state.
* stage 3 (``DeepSpeedZeroOptimizer_Stage3``): each parameter's ``ds_tensor``
  partition (views of ``fp16_partitioned_groups_flat``), ``fp32_partitioned_groups_flat``
  (master), ``grad_partitions_flat_buffer`` / ``__param_id_to_grad_partition``.

Rather than hard-coding each attribute (they move between releases), the
optimizer object graph is walked and every tensor is classified by the
attribute path that reaches it; storages are counted once, so views of flat
buffers are not double counted.  Tensors that match no rule are reported as
``other`` with their paths, never silently dropped.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Optional

import torch
from torch import nn

# Categories comparable with the ZeRO paper's formulas, and the rest.
FORMULA_CATEGORIES = ("params", "gradients", "master_params", "optimizer_states")
ALL_CATEGORIES = FORMULA_CATEGORIES + ("comm_buffers", "optimizer_bookkeeping", "other")
_WALK_MODULE_PREFIXES = ("deepspeed.", "torch.optim")
_SKIP_ATTRS = {"module", "_modules", "param_coordinator", "parameter_offload", "timers",
               "loss_scaler", "dp_process_group", "real_dp_process_group", "_global_grad_norm",
               "param_names", "param_to_name"}
_MAX_DEPTH = 7


def _storage_key(tensor: torch.Tensor) -> Optional[tuple[str, int]]:
    if tensor.device.type == "meta":   # shape-only placeholders (DeepSpeed keeps some): no memory
        return None
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    if storage.nbytes() == 0:
        return None
    return str(tensor.device), storage.data_ptr()


def classify(path: str) -> str:
    """The model-state category of a tensor reached through attribute ``path``."""
    p = path.lower()
    leaf = p.rsplit(".", 1)[-1]
    if ".state[" in p or p.startswith("state["):
        return "optimizer_bookkeeping" if leaf in ("['step']", "step") or p.endswith("['step']") \
            else "optimizer_states"
    if "ipg" in p or "bucket" in p:
        return "comm_buffers"
    if "grad" in p:
        return "gradients"
    if "fp32" in p or "master" in p or "param_groups" in p:
        return "master_params"
    if "buffer" in p:
        return "comm_buffers"
    if any(word in p for word in ("bit16", "fp16", "bf16", "lp_", "param", "groups_flat")):
        return "params"
    return "other"


class _Counter:
    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.bytes: dict[str, dict[str, int]] = {c: defaultdict(int) for c in ALL_CATEGORIES}
        self.other_paths: list[str] = []

    def add(self, tensor: torch.Tensor, category: str, path: str) -> None:
        key = _storage_key(tensor)
        if key is None or key in self.seen:
            return
        self.seen.add(key)
        self.bytes[category][tensor.device.type] += tensor.untyped_storage().nbytes()
        if category == "other" and len(self.other_paths) < 20:
            self.other_paths.append(path)

    def walk(self, obj: Any, path: str, depth: int, visited: set[int]) -> None:
        if isinstance(obj, torch.Tensor):
            self.add(obj, classify(path), path)
            return
        if depth > _MAX_DEPTH or id(obj) in visited:
            return
        if isinstance(obj, dict):
            visited.add(id(obj))
            for key, value in obj.items():
                label = key if isinstance(key, (str, int)) else type(key).__name__
                self.walk(value, f"{path}[{label!r}]", depth + 1, visited)
        elif isinstance(obj, (list, tuple, set)):
            visited.add(id(obj))
            for index, value in enumerate(obj):
                self.walk(value, f"{path}[{index}]", depth + 1, visited)
        elif type(obj).__module__.startswith(_WALK_MODULE_PREFIXES) and hasattr(obj, "__dict__"):
            visited.add(id(obj))
            for name, value in vars(obj).items():
                if name not in _SKIP_ATTRS and not isinstance(value, nn.Module):
                    self.walk(value, f"{path}.{name}" if path else name, depth + 1, visited)


def _inner_optimizers(optimizer: Any) -> Iterable[Any]:
    """The optimizer and the torch optimizer(s) it wraps (DeepSpeed keeps one in ``.optimizer``)."""
    seen, current = set(), optimizer
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "optimizer", None)


def count_model_state_bytes(module: nn.Module, optimizer: Any) -> dict[str, Any]:
    """Bytes of parameters, gradients and optimizer states that ``module`` + ``optimizer`` hold.

    Returns ``{category: {device_type: bytes}}`` for every category in
    :data:`ALL_CATEGORIES`, plus ``formula_comparable`` (params + gradients +
    master params + optimizer states, all devices), ``device_bytes``/``host_bytes``
    of that sum split by where the tensors live, and ``other_paths``.
    """
    counter = _Counter()
    for name, param in module.named_parameters():  # model parameters first: they own their storage
        partition = getattr(param, "ds_tensor", None)   # ZeRO-3 partition of this parameter
        if partition is not None:
            counter.add(partition, "params", f"{name}.ds_tensor")
            if getattr(partition, "grad", None) is not None:
                counter.add(partition.grad, "gradients", f"{name}.ds_tensor.grad")
        counter.add(param.data, "params", name)
        if param.grad is not None:
            counter.add(param.grad, "gradients", f"{name}.grad")
    for index, opt in enumerate(_inner_optimizers(optimizer)):
        prefix = "optimizer" + ".optimizer" * index
        if isinstance(opt, torch.optim.Optimizer):   # state keyed by parameter: walk values only
            for slot, state in enumerate(opt.state.values()):
                counter.walk(state, f"{prefix}.state[{slot}]", 0, set())
        counter.walk({k: v for k, v in vars(opt).items()
                      if k not in ("state", "optimizer")}, prefix, 0, set())
        for group in getattr(opt, "param_groups", []):
            for tensor in group.get("params", []):
                if isinstance(tensor, torch.Tensor) and tensor.grad is not None:
                    counter.add(tensor.grad, "gradients", f"{prefix}.param_groups.grad")
    out: dict[str, Any] = {c: dict(counter.bytes[c]) for c in ALL_CATEGORIES}
    comparable = [counter.bytes[c] for c in FORMULA_CATEGORIES]
    out["formula_comparable"] = sum(sum(d.values()) for d in comparable)
    out["host_bytes"] = sum(d.get("cpu", 0) for d in comparable)
    out["device_bytes"] = out["formula_comparable"] - out["host_bytes"]
    out["other_paths"] = counter.other_paths
    return out


def totals(breakdown: dict[str, Any]) -> dict[str, int]:
    """``{category: bytes on all devices}`` of a :func:`count_model_state_bytes` result."""
    return {c: int(sum(breakdown.get(c, {}).values())) for c in ALL_CATEGORIES}
