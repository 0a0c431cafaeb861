"""Per-rank memory breakdown of a training run, filled in by a few calls from the step loop.

Usage (DeepSpeed engine or a plain module + torch optimizer)::

    probe = MemoryProbe(module, optimizer, device, num_params, stage, world, precision, offload)
    probe.record_host(dataset, loader)
    for batch in batches:
        probe.begin_step(batch)
        with probe.forward():
            loss = ...
        backward(loss); probe.after_backward()
        step();         probe.after_step()
    probe.summary()   # -> dict for metrics.json

Model states are counted on the first ``count_steps`` steps (after backward, when
the gradients exist, and after the optimizer step, when its states exist);
the per-category maxima are kept.  The ZeRO-formula prediction comes from
:func:`gnnzero.models.accounting.zero_model_state_bytes`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch

from ..models.accounting import persistent_parameter_count, zero_model_state_bytes
from .activations import ActivationMeter, batch_bytes, batch_tensors, has_sparse_features
from .host_memory import dataset_and_loader_host_bytes
from .memory import begin_step_rss_window, end_step_rss_window, reset_step_peak
from .model_state import ALL_CATEGORIES, FORMULA_CATEGORIES, count_model_state_bytes


class MemoryProbe:
    """Collects model-state, activation, batch and host bytes for one rank."""

    def __init__(self, module: torch.nn.Module, optimizer: Any, device: torch.device,
                 num_params: int, stage: int, world_size: int, precision: str,
                 offload: str = "none", count_steps: int = 3) -> None:
        self.module, self.optimizer, self.device = module, optimizer, device
        self.num_params, self.stage, self.world_size = num_params, stage, world_size
        self.precision, self.offload, self.count_steps = precision, offload, count_steps
        self.steps = 0
        self.states: dict[str, dict[str, int]] = {c: {} for c in ALL_CATEGORIES}
        self.other_paths: list[str] = []
        self.saved = ActivationMeter()
        self.batch_peak = 0
        self.batch_layouts: set[str] = set()
        self.cuda_step_start = 0
        self.cuda_activation_peak = 0
        self.host: dict[str, int] = {}
        self._batch: Optional[Any] = None
        self._meter_this_step = True

    def record_host(self, dataset: Any, loader: Any) -> None:
        self.host = dataset_and_loader_host_bytes(dataset, loader)

    def begin_step(self, batch: Any) -> None:
        self._batch = batch
        size = batch_bytes(batch)
        # The activations of one model grow with its batch: meter the first steps and
        # every batch larger than all before it (the peak), not the steps in between,
        # whose per-operator bookkeeping would slow training for nothing.
        self._meter_this_step = self.steps < self.count_steps or size > self.batch_peak
        self.batch_peak = max(self.batch_peak, size)
        self.batch_layouts.add("sparse" if has_sparse_features(batch) else "dense")
        self.cuda_step_start = reset_step_peak(self.device)
        begin_step_rss_window()

    @contextmanager
    def forward(self) -> Iterator[None]:
        """Wrap the forward pass (and the loss) to count what it leaves alive for backward."""
        if not self._meter_this_step:
            yield
            return
        exclude = batch_tensors(self._batch) if self._batch is not None else []
        with self.saved.recording(exclude, self.module.parameters()):
            yield

    def _count(self) -> None:
        if self.steps >= self.count_steps:
            return
        counted = count_model_state_bytes(self.module, self.optimizer)
        for category in ALL_CATEGORIES:
            for dev, nbytes in counted[category].items():
                self.states[category][dev] = max(self.states[category].get(dev, 0), nbytes)
        self.other_paths = sorted(set(self.other_paths) | set(counted["other_paths"]))[:20]

    def after_backward(self) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - self.cuda_step_start
            self.cuda_activation_peak = max(self.cuda_activation_peak, int(peak))
        self._count()

    def after_step(self) -> None:
        end_step_rss_window()
        self._count()
        self.steps += 1
        self._batch = None

    def summary(self) -> dict[str, Any]:
        """The breakdown as plain numbers (bytes), with each measurement method named."""
        per_category = {c: int(sum(d.values())) for c, d in self.states.items()}
        measured = sum(per_category[c] for c in FORMULA_CATEGORIES)
        on_host = sum(self.states[c].get("cpu", 0) for c in FORMULA_CATEGORIES)
        persistent = persistent_parameter_count(self.module)
        full = zero_model_state_bytes(self.num_params, self.stage, self.world_size, self.precision,
                                      persistent_params=persistent)
        accel = zero_model_state_bytes(self.num_params, self.stage, self.world_size, self.precision,
                                       offload_optimizer="optimizer" in self.offload,
                                       persistent_params=persistent)
        out = {
            "model_state_bytes": {
                "method": "tensors held by the engine/optimizer (distinct storages)",
                **per_category, "total": measured,
                "on_accelerator": measured - on_host if self.device.type == "cuda" else 0,
                "on_host": on_host, "unclassified_paths": self.other_paths},
            "zero_formula_bytes": {"all_devices": full.as_dict(), "on_accelerator": accel.as_dict()},
            "model_state_measured_over_formula": measured / full.total if full.total else None,
            "activation_bytes": {"method": "live_after_forward",
                                 "peak": self.saved.peak_bytes},
            "batch_bytes_peak": self.batch_peak,
            # how the training batches carried x: sparse (torch CSR), dense, or both
            "batch_x_layout": "+".join(sorted(self.batch_layouts)) or None,
            "host_bytes": self.host,
        }
        if self.device.type == "cuda":
            out["model_state_accelerator_over_formula"] = \
                (measured - on_host) / accel.total if accel.total else None
            out["activation_bytes"]["cuda_step_peak_above_start"] = self.cuda_activation_peak
        return out
