"""The one object that says where a run stands; saved in every checkpoint and restored whole."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class RunState:
    """Training progress: position, curves, the epoch log and the last checkpoint."""

    epoch: int = 0                       # epoch to run next (or the one in progress)
    batch_in_epoch: int = 0              # batches of ``epoch`` already trained
    loss_curve: list = field(default_factory=list)   # (optimizer step, mean loss over ranks)
    epoch_log: list = field(default_factory=list)    # one dict per finished epoch
    last_checkpoint: Optional[str] = None
    last_saved_step: int = -1            # optimizer step of the last checkpoint written
    early_stopped_epoch: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "RunState":
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})
