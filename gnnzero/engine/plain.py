"""A plain PyTorch model + optimizer behind the few engine methods the training loop calls.

The plain-PyG baseline runs the trainer's own loop through this adapter, so the
two differ only in what DeepSpeed does: no ZeRO partitioning, no mixed precision,
no prefetching.  On several ranks it is what a user would write by hand: the model
wrapped in torch's ``DistributedDataParallel`` (gradients averaged in backward),
each rank on the same shard of batches a DeepSpeed rank gets.  Gradient accumulation and clipping follow
DeepSpeed's definitions: the loss is divided by the accumulation steps and the
global gradient norm is clipped before each optimizer step.
"""
from __future__ import annotations

from typing import Any, Optional

import torch


def optimizer_from_ds_config(model: torch.nn.Module,
                             ds_config: dict[str, Any]) -> torch.optim.Optimizer:
    """The torch optimizer DeepSpeed would build from the ds_config: AdamW (decoupled decay),
    or Adam with L2 decay for ``"type": "Adam"`` with ``"adam_w_mode": false``."""
    optimizer = ds_config.get("optimizer", {})
    params = dict(optimizer.get("params", {}))
    l2_adam = optimizer.get("type", "AdamW").lower() == "adam" and not params.get("adam_w_mode", True)
    cls = torch.optim.Adam if l2_adam else torch.optim.AdamW
    return cls(model.parameters(), lr=params.get("lr", 1e-3),
               betas=tuple(params.get("betas", (0.9, 0.999))), eps=params.get("eps", 1e-8),
               weight_decay=params.get("weight_decay", 0.01))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class PlainEngine:
    """DeepSpeed-engine look-alike: ``backward``, ``step``, step counters, ``module``."""

    skipped_steps = 0

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 gradient_accumulation_steps: int = 1, gradient_clipping: float = 0.0,
                 world_size: int = 1) -> None:
        self.module, self.optimizer, self.world_size = model, optimizer, world_size
        self._forward = model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
            self._forward = DistributedDataParallel(model, device_ids=device_ids)
        self._accumulation, self._clip = gradient_accumulation_steps, gradient_clipping
        self.global_steps = self.micro_steps = 0
        self._grad_norm: Optional[float] = None

    def __call__(self, *args, **kwargs):
        return self._forward(*args, **kwargs)

    def train(self, mode: bool = True) -> "PlainEngine":
        self.module.train(mode)
        return self

    def eval(self) -> "PlainEngine":
        return self.train(False)

    def zero_optimization_stage(self) -> int:
        return 0

    def gradient_accumulation_steps(self) -> int:
        return self._accumulation

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self._accumulation == 0

    def backward(self, loss: torch.Tensor) -> None:
        # DDP all-reduces on every backward; like DeepSpeed's default, accumulation
        # micro-steps are not kept local (no_sync), so the two communicate alike.
        (loss / self._accumulation).backward()

    def step(self) -> None:
        if self.is_gradient_accumulation_boundary():
            params = [p for p in self.module.parameters() if p.grad is not None]
            if self._clip > 0:
                self._grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self._clip))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_steps += 1
        self.micro_steps += 1

    def get_global_grad_norm(self) -> Optional[float]:
        return self._grad_norm
