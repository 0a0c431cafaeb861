"""Per-step statistics (phase times, node/edge counts, losses), shared by the DeepSpeed
trainer and the plain-PyG baseline so both report throughput the same way."""
from __future__ import annotations

from dataclasses import dataclass, field

PHASES = ("sampling", "forward", "backward", "optimizer")
COUNTS = ("train_nodes", "batch_nodes", "batch_edges", "batches")


@dataclass
class StepStats:
    """Seconds per phase and counts, summed over the steps added."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0.0))
    loss_sum: float = 0.0

    def add_step(self, batch, loss: float, phase_seconds: dict[str, float]) -> None:
        """One micro-step: its batch (``loss_mask``, nodes, edges), loss and phase times."""
        for phase, value in phase_seconds.items():
            self.seconds[phase] += value
        self.counts["train_nodes"] += float(batch.loss_mask.sum())
        self.counts["batch_nodes"] += batch.num_nodes
        self.counts["batch_edges"] += batch.edge_index.size(1)
        self.counts["batches"] += 1
        self.loss_sum += loss

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
                "batch_nodes_per_s": counts["batch_nodes"] / per,
                "edges_per_s": counts["batch_edges"] / per,
                "batches_per_s": counts["batches"] / per}
