"""Per-step statistics (phase times, node/edge counts, losses), shared by the DeepSpeed
trainer and the plain-PyG baseline so both report throughput the same way."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..engine.batches import labelled_store

PHASES = ("sampling", "forward", "backward", "optimizer")
COUNTS = ("train_nodes", "train_pairs", "batch_nodes", "batch_edges", "batches")


@dataclass
class StepStats:
    """Seconds per phase and counts, summed over the steps added."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0.0))
    loss_sum: float = 0.0

    def add_step(self, batch, loss, phase_seconds: dict[str, float]) -> None:
        """One micro-step: its batch (``loss_mask``, nodes, edges), loss (a float, or a 0-d
        tensor summed without a host sync until :meth:`settle`) and phase times."""
        for phase, value in phase_seconds.items():
            self.seconds[phase] += value
        self.counts["train_nodes"] += labelled_store(batch).loss_mask.sum()  # on the device
        pairs = getattr(batch, "edge_label_index", None)   # link prediction: pairs scored
        self.counts["train_pairs"] += 0 if pairs is None else pairs.size(1)
        self.counts["batch_nodes"] += batch.num_nodes
        self.counts["batch_edges"] += batch.num_edges
        self.counts["batches"] += 1
        self.loss_sum += loss

    def settle(self) -> None:
        """Turn the tensor sums (loss, training nodes) into floats: one host sync."""
        self.loss_sum = float(self.loss_sum)
        self.counts = {key: float(value) for key, value in self.counts.items()}

    def add(self, other: "StepStats") -> None:
        for phase in PHASES:
            self.seconds[phase] += other.seconds[phase]
        for key in COUNTS:
            self.counts[key] += other.counts[key]
        self.loss_sum += other.loss_sum

    def throughput(self, counts: dict[str, float], seconds: float) -> dict[str, float]:
        """Rates from ``counts`` (e.g. summed over ranks) over ``seconds`` of training."""
        per = max(seconds, 1e-9)
        return {"train_nodes_per_s": counts["train_nodes"] / per,
                "train_pairs_per_s": counts.get("train_pairs", 0.0) / per,
                "batch_nodes_per_s": counts["batch_nodes"] / per,
                "edges_per_s": counts["batch_edges"] / per,
                "batches_per_s": counts["batches"] / per}


class PhaseClock:
    """The phase boundaries of each step, read without a per-step host sync.

    On the CPU a boundary is ``time.perf_counter()``; on CUDA it is an event recorded
    on the current stream, and the elapsed times are read once, in :meth:`drain`
    (one synchronisation per epoch instead of one per phase of every step).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._steps: list[list] = []

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self._steps.append([self._now()])

    def lap(self) -> None:
        self._steps[-1].append(self._now())

    def drain(self, stats: StepStats) -> None:
        """Add every finished step's phase seconds (the phases in ``PHASES`` order) to ``stats``."""
        if self.cuda and self._steps:
            torch.cuda.synchronize()
        for marks in self._steps:
            for phase, (a, b) in zip(PHASES, zip(marks, marks[1:])):
                stats.seconds[phase] += (a.elapsed_time(b) / 1e3) if self.cuda else (b - a)
        self._steps = []
