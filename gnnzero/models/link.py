"""Link prediction models: a node encoder (any :func:`~.builders.build_model` GNN) and a
decoder scoring node pairs from the two embeddings."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


class DotDecoder(nn.Module):
    """``<z_u, z_v>``: the score of PyG's ``examples/link_pred.py`` (no parameters)."""

    def forward(self, z_src: Tensor, z_dst: Tensor) -> Tensor:
        return (z_src * z_dst).sum(dim=-1)


class MLPDecoder(nn.Module):
    """An MLP on ``z_u * z_v`` (OGB's ``LinkPredictor``): symmetric in the pair."""

    def __init__(self, channels: int, hidden: Optional[int] = None) -> None:
        super().__init__()
        hidden = hidden or channels
        self.lins = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z_src: Tensor, z_dst: Tensor) -> Tensor:
        return self.lins(z_src * z_dst).squeeze(-1)


DECODER_CLASSES = {"dot": DotDecoder, "mlp": MLPDecoder}


class LinkPredictor(nn.Module):
    """``forward(x, edge_index, edge_weight, pairs)``: scores (logits) of the ``[2, P]`` local
    node pairs; without ``pairs``, the node embeddings."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.config = {**getattr(encoder, "config", {}), "decoder": type(decoder).__name__}

    @property
    def accepts_sparse_input(self) -> bool:
        return bool(getattr(self.encoder, "accepts_sparse_input", False))

    def forward(self, x, edge_index: Tensor, edge_weight: Optional[Tensor] = None,
                pairs: Optional[Tensor] = None) -> Tensor:
        z = self.encoder(x, edge_index, edge_weight)
        if pairs is None:
            return z
        return self.decoder(z[pairs[0]], z[pairs[1]])


def build_link_model(encoder: nn.Module, decoder: str, channels: int) -> LinkPredictor:
    """``encoder`` (output width ``channels``) with a ``dot`` or ``mlp`` decoder."""
    if decoder not in DECODER_CLASSES:
        raise ValueError(f"decoder '{decoder}' is unknown; choose one of "
                         f"{', '.join(DECODER_CLASSES)}")
    return LinkPredictor(encoder, DECODER_CLASSES[decoder]() if decoder == "dot"
                         else DECODER_CLASSES[decoder](channels))


def encoder_of(model: nn.Module) -> nn.Module:
    """The node encoder inside a (DeepSpeed-wrapped) model: the GNN itself for node
    classification, ``.encoder`` of a :class:`LinkPredictor`."""
    module = getattr(model, "module", model)
    return module.encoder if isinstance(module, LinkPredictor) else module
