"""The task section of the config tree: node classification or link prediction."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from ..utils.settings import check_settings, field_named, refuse, setting

TASKS = ("node", "link")
DECODERS = ("dot", "mlp")
# Link-only settings: given with --task node they would be ignored, so they are refused.
LINK_ONLY = ("val_fraction", "test_fraction", "decoder", "embedding_dim", "neg_ratio",
             "mrr_negatives", "hits_at", "min_bucket")


@dataclass(kw_only=True)
class TaskConfig:
    """What the model learns: node labels, or which node pairs are edges."""

    task: str = setting("node", "node = node classification; link = link prediction on a "
                                "seeded hidden-edge split (the model is the encoder)",
                        choices=TASKS)
    val_fraction: float = setting(0.05, "--task link: undirected edges hidden for validation",
                                  low=0, high=1, low_open=True, high_open=True)
    test_fraction: float = setting(0.1, "--task link: undirected edges hidden for testing",
                                   low=0, high=1, low_open=True, high_open=True)
    decoder: str = setting("dot", "--task link: pair score from the two embeddings: dot "
                                  "product, or an MLP on their elementwise product",
                           choices=DECODERS)
    embedding_dim: Optional[int] = setting(None, "--task link: width of the encoder's output "
                                                 "node embeddings", low=1,
                                           none_means="--hidden")
    neg_ratio: float = setting(1.0, "--task link: sampled negative pairs per positive edge in "
                                    "a training batch", low=0, low_open=True)
    mrr_negatives: int = setting(100, "--task link: random negatives per positive edge for "
                                      "the MRR (OGB's per-positive lists)", low=1)
    hits_at: list[int] = setting([20, 50, 100], "--task link: K of the Hits@K metrics (OGB: a "
                                                "positive counts if it beats the K-th best "
                                                "negative)", low=1)
    min_bucket: int = setting(20, "--task link: positive test edges a distance bucket needs; "
                                  "a smaller bucket merges with the next (the last with the "
                                  "one before)", low=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.val_fraction + self.test_fraction >= 1:
            raise refuse(field_named(TaskConfig, "test_fraction"), self.test_fraction,
                         f"with --val-fraction {self.val_fraction} hides every edge; keep "
                         f"their sum below 1")

    @property
    def is_link(self) -> bool:
        return self.task == "link"

    def link_options(self) -> dict:
        """The link settings (empty for node classification), for the resume check."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if self.is_link and f.name in LINK_ONLY}
