"""Heterogeneous graphs: our builders turned into per-edge-type models with PyG's ``to_hetero``.

``to_hetero`` copies every convolution once per edge type and sums the messages
arriving at a node type.  Low rank and weight sharing are applied *after* the
conversion (a copy per edge type would otherwise duplicate the shared cores), so
each edge type gets its own factorised maps and, with ``share_weights``, one set
of cores shared by its hidden-to-hidden layers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import to_hetero

from .builders import GATModel, SAGEModel, _validate, hidden_layer_indices
from .lowrank import replace_linears_with_low_rank, share_linear_weights
from .options import HETERO_ARCHS


def build_hetero_model(arch: str, data: HeteroData, hidden_channels: int, out_channels: int,
                       num_layers: int, *, share_weights: bool = False,
                       rank: Optional[int] = None, dropout: float = 0.5,
                       norm: Optional[str] = None, jk: Optional[str] = None, heads: int = 1,
                       aggr: str = "sum") -> nn.Module:
    """A heterogeneous GNN for ``data``'s node and edge types.

    ``forward(x_dict, edge_index_dict)`` returns a dict of logits per node type.
    ``data`` (the graph or one sampled batch of it) gives the metadata and the
    per-type input widths, which initialise the lazy first-layer weights.
    """
    if arch not in HETERO_ARCHS:
        raise ValueError(f"arch '{arch}' has no heterogeneous path; allowed values: "
                         f"{', '.join(HETERO_ARCHS)} (their convolutions accept bipartite edges)")
    if not isinstance(data, HeteroData):
        raise ValueError(f"data must be a torch_geometric HeteroData, got {type(data).__name__}; "
                         f"use build_model for homogeneous graphs")
    _validate(arch, 1, hidden_channels, out_channels, num_layers, rank, dropout, norm, jk, heads)
    if arch == "sage":
        model = SAGEModel((-1, -1), hidden_channels, num_layers, out_channels, dropout=dropout,
                          norm=norm, jk=jk)
    else:
        model = GATModel((-1, -1), hidden_channels, num_layers, out_channels, dropout=dropout,
                         norm=norm, jk=jk, heads=heads, add_self_loops=False)
    model = to_hetero(model, data.metadata(), aggr=aggr)
    with torch.no_grad():  # materialise the lazy (-1) input maps before factorising them
        model.eval()       # (no dropout draw, no batch-norm statistics from this pass)
        model(data.x_dict, data.edge_index_dict)
        model.train()
    edge_keys = list(model.convs[0].keys())
    if rank is not None:
        for conv in model.convs:
            for key in edge_keys:
                replace_linears_with_low_rank(conv[key], rank)
    if share_weights:
        model.shared_cores = nn.ModuleDict({
            key: share_linear_weights([model.convs[i][key]
                                       for i in hidden_layer_indices(num_layers, jk)])
            for key in edge_keys})
    return model
