"""Training health every N optimizer steps: per-layer gradient norms and activation statistics.

* Gradients: the full (rank-averaged) gradient of every parameter is read with
  ``deepspeed.utils.safe_get_full_grad``, which works at every ZeRO stage (stage
  1/2 reassemble the partitioned fp32 gradient, stage 3 all-gathers it), so
  **every rank must call** :meth:`TrainingMonitor.record_gradients` at the same
  steps -- after ``engine.backward`` at a gradient-accumulation boundary, before
  ``engine.step``.  Norms are summed per layer (``convs.0``, ``norms.1``, ``lin``).
  After ``engine.step`` DeepSpeed's own global norm is logged beside them.
* Activations: a forward hook on each hidden layer's norm module
  (``BasicGNN.norms[i]``, an ``Identity`` without norm) takes the layer's output
  after the activation function and records mean, std, the fraction of zero
  entries and the fraction of dead ReLU units (channels that are zero for every
  node of the batch).  Rank 0's training batch only.
* Alerts: a NaN/inf gradient, or a layer norm above ``max_grad_norm`` or
  ``explode_factor`` times that layer's median so far, is printed once with the
  layer and step and kept in :attr:`TrainingMonitor.alerts`.

Rank 0 writes ``grad_norms.csv`` and ``activations.csv`` in ``out_dir`` and,
when the ``tensorboard`` package is installed, TensorBoard scalars in ``out_dir/tb``.
"""
from __future__ import annotations

import csv
import math
import os
import statistics
import sys
from collections import defaultdict
from typing import Optional

from torch import Tensor, nn

from ..errors import GnnZeroError

GRAD_FIELDS = ["step", "layer", "grad_norm"]
ACT_FIELDS = ["step", "layer", "mean", "std", "zero_fraction", "dead_fraction", "nodes"]
GLOBAL_NORM_LAYER = "deepspeed_global_norm"
TOTAL_LAYER = "total"


def layer_of(param_name: str) -> str:
    """``convs.1.lin_l.weight`` -> ``convs.1``; ``lin.weight`` -> ``lin`` (module-list index kept)."""
    parts = param_name.split(".")
    if parts[0] in ("module", "_orig_mod"):
        parts = parts[1:]
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def activation_stats(x: Tensor) -> dict[str, float]:
    """Mean, std, zero fraction and dead-unit fraction of a ``[nodes, channels]`` activation."""
    x = x.detach().float().reshape(x.size(0), -1) if x.dim() > 1 else x.detach().float().view(-1, 1)
    zero = x == 0
    return {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0,
            "zero_fraction": float(zero.float().mean()),
            "dead_fraction": float(zero.all(dim=0).float().mean()) if x.size(0) else 0.0,
            "nodes": int(x.size(0))}


def _tensorboard_writer(path: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(path)


class _Csv:
    def __init__(self, path: str, fields: list[str]) -> None:
        new = not os.path.exists(path)
        self.handle = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, fieldnames=fields)
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TrainingMonitor:
    """Per-layer gradient norms and activation statistics every ``every`` optimizer steps."""

    def __init__(self, model: nn.Module, out_dir: str, every: int, rank: int = 0,
                 max_grad_norm: float = 1e4, explode_factor: float = 100.0,
                 tensorboard: bool = True) -> None:
        if every < 0:
            raise GnnZeroError(f"--monitor-every must be >= 0 (0 = off), got {every}")
        self.model = getattr(model, "module", model)
        self.every, self.rank = every, rank
        self.max_grad_norm, self.explode_factor = max_grad_norm, explode_factor
        self.alerts: list[str] = []
        self.history: dict[str, list[float]] = defaultdict(list)
        self._armed = False
        self._step = 0
        self._hooks = []
        self.out_dir = out_dir
        self.grad_csv = self.act_csv = self.tb = None
        if rank == 0 and every > 0:
            os.makedirs(out_dir, exist_ok=True)
            self.grad_csv = _Csv(os.path.join(out_dir, "grad_norms.csv"), GRAD_FIELDS)
            self.act_csv = _Csv(os.path.join(out_dir, "activations.csv"), ACT_FIELDS)
            self.tb = _tensorboard_writer(os.path.join(out_dir, "tb")) if tensorboard else None
        # the GNN whose hidden layers are hooked: the model, or a link predictor's encoder
        self.gnn = getattr(self.model, "encoder", self.model)
        norms = getattr(self.gnn, "norms", None)
        if every > 0 and norms is not None:
            hidden = self.gnn.num_layers - (0 if self.gnn.jk_mode else 1)
            for index, norm in enumerate(list(norms)[:hidden]):
                self._hooks.append(norm.register_forward_hook(self._activation_hook(index)))
        self._hidden_layers = len(self._hooks)

    # -- scheduling
    def wants(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def start_forward(self, step: int) -> None:
        """Call before the forward of a batch that leads to optimizer step ``step``."""
        self._armed = self.rank == 0 and self.wants(step) and step != self._step
        self._step = step if self._armed else self._step

    # -- activations
    def _activation_hook(self, layer: int):
        def hook(module, inputs, output) -> None:
            if not (self._armed and self.gnn.training):
                return
            act = self.gnn.act
            # ``act.forward``, not ``act(...)``: a module call would run ZeRO-3's hooks and add
            # a submodule to its trace on rank 0 only, which DeepSpeed rejects as a rank mismatch.
            value = (output if act is None or self.gnn.act_first
                     else act.forward(output.detach()))
            stats = activation_stats(value)
            if self.act_csv is not None:
                self.act_csv.write({"step": self._step, "layer": layer, **stats})
            if self.tb is not None:
                for key in ("mean", "std", "dead_fraction"):
                    self.tb.add_scalar(f"activation/{key}/layer{layer}", stats[key], self._step)
            if layer == self._hidden_layers - 1:
                self._armed = False  # one forward per monitored step, not every micro-batch
        return hook

    # -- gradients
    def _grad_scale(self, engine) -> float:
        """fp16 gradients are held multiplied by the loss scale until ``step`` unscales them."""
        if engine is None or not engine.fp16_enabled():
            return 1.0
        optimizer = engine.optimizer
        scale = getattr(optimizer, "cur_scale", None) or getattr(optimizer, "loss_scale", None)
        return float(scale or 1.0)

    def gradient_norms(self, engine) -> dict[str, float]:
        """Per-layer L2 norms of the full gradient (a collective under ZeRO: call on all ranks)."""
        from deepspeed.utils import safe_get_full_grad

        squares: dict[str, float] = defaultdict(float)
        scale = self._grad_scale(engine)
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            grad = safe_get_full_grad(param)
            if grad is None:
                continue
            squares[layer_of(name)] += float(grad.detach().float().pow(2).sum()) / scale ** 2
        norms = {layer: math.sqrt(value) if math.isfinite(value) else value
                 for layer, value in squares.items()}
        norms[TOTAL_LAYER] = math.sqrt(sum(squares.values())) if all(
            math.isfinite(v) for v in squares.values()) else float("nan")
        return norms

    def record_gradients(self, engine, step: int) -> Optional[dict[str, float]]:
        """At a monitored step: per-layer norms to CSV/TensorBoard, alerts for bad layers."""
        if not self.wants(step):
            return None
        norms = self.gradient_norms(engine)
        for layer, value in norms.items():
            self._check(layer, value, step)
            self.history[layer].append(value)
            self._write_grad(step, layer, value)
        return norms

    def record_global_norm(self, engine, step: int) -> None:
        """After ``engine.step``: DeepSpeed's own (pre-clipping) global gradient norm."""
        if not self.wants(step):
            return
        value = engine.get_global_grad_norm() if engine is not None else None
        if value is not None:
            self._write_grad(step, GLOBAL_NORM_LAYER, float(value))

    def _write_grad(self, step: int, layer: str, value: float) -> None:
        if self.grad_csv is not None:
            self.grad_csv.write({"step": step, "layer": layer, "grad_norm": value})
        if self.tb is not None:
            self.tb.add_scalar(f"grad_norm/{layer}", value, step)

    def _check(self, layer: str, value: float, step: int) -> None:
        if layer == TOTAL_LAYER:
            return
        message = None
        if not math.isfinite(value):
            message = f"gradient of layer {layer} is {value} at optimizer step {step}"
        elif value > self.max_grad_norm:
            message = (f"gradient of layer {layer} is exploding at optimizer step {step}: norm "
                       f"{value:.3g} > {self.max_grad_norm:.3g}")
        elif len(self.history[layer]) >= 3:
            median = statistics.median(self.history[layer])
            if median > 0 and value > self.explode_factor * median:
                message = (f"gradient of layer {layer} is exploding at optimizer step {step}: "
                           f"norm {value:.3g} is {value / median:.0f}x its median {median:.3g}")
        if message:
            self.alerts.append(message)
            if self.rank == 0:
                print(f"warning: {message}; lower --lr or set --grad-clip", file=sys.stderr,
                      flush=True)

    def summary(self) -> dict:
        """What goes into ``metrics.json``."""
        return {"every": self.every, "dir": self.out_dir, "alerts": list(self.alerts),
                "files": (["grad_norms.csv", "activations.csv"] if self.grad_csv else [])
                + (["tb"] if self.tb else [])}

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for sink in (self.grad_csv, self.act_csv):
            if sink is not None:
                sink.close()
        if self.tb is not None:
            self.tb.close()
