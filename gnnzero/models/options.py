"""The model section of the config tree: architecture and shape, each setting once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..utils.settings import check_settings, field_named, refuse, setting

ARCHS = ("gcn", "sage", "gat", "gin", "pinsage")
NORMS = (None, "batch", "layer", "graph")
JK_MODES = (None, "last", "cat", "max")
# Convolutions that accept bipartite (source type != target type) inputs: to_hetero's needs.
HETERO_ARCHS = ("sage", "gat")


def hidden_layer_indices(num_layers: int, jk: Optional[str]) -> list[int]:
    """Indices of the hidden-to-hidden convolutions (the ones that can share weights)."""
    last = num_layers if jk is not None else num_layers - 1
    return list(range(1, last))


@dataclass(kw_only=True)
class ModelConfig:
    """The GNN: architecture, width, depth, low-rank and shared weights."""

    arch: str = setting("sage", "architecture", flag="--model", choices=ARCHS)
    hidden: int = setting(128, "hidden channels", low=1)
    layers: int = setting(2, "message-passing layers", low=1)
    rank: Optional[int] = setting(None, "low-rank factorisation rank of every linear map",
                                  low=1, none_means="dense")
    share_weights: bool = setting(False, "all hidden-to-hidden layers share one set of weights")
    dropout: float = setting(0.5, "dropout probability", low=0, high=1, high_open=True)
    norm: Optional[str] = setting(None, "normalisation after each hidden layer",
                                  choices=NORMS[1:], none_means="no normalisation")
    jk: Optional[str] = setting(None, "jumping-knowledge mode", choices=JK_MODES[1:],
                                none_means="last layer only")
    heads: int = setting(1, "attention heads (--model gat only)", low=1)
    categorical_dim: int = setting(16, "--categorical: width of the categorical columns' "
                                       "summed embedding, concatenated to x", low=1)
    activation_checkpointing: bool = setting(False, "recompute each GNN layer in backward to "
                                                    "save activation memory")

    def __post_init__(self) -> None:
        check_settings(self)
        heads = field_named(ModelConfig, "heads")
        if self.heads != 1 and self.arch != "gat":
            raise refuse(heads, self.heads, f"attention heads apply to --model gat only, not "
                                            f"--model {self.arch}; drop --heads")
        if self.arch == "gat" and self.hidden % self.heads:
            raise refuse(heads, self.heads, f"must divide --hidden {self.hidden}")
