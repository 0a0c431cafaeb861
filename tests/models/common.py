"""Architectures and small graphs shared by the model tests."""
from __future__ import annotations

import torch

ARCHS = ("gcn", "sage", "gat", "gin", "pinsage")
HEADS = 2
LEAVES = 5000


def random_graph(num_nodes=30, num_edges=120, seed=0):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    return edge_index, torch.rand(num_edges, generator=gen) + 0.1


def star_graph() -> tuple[torch.Tensor, torch.Tensor]:
    """Hub 0 linked both ways to 5,000 leaves (features in [0.5, 1.5))."""
    leaves = torch.arange(1, LEAVES + 1)
    hub = torch.zeros_like(leaves)
    edge_index = torch.cat([torch.stack([leaves, hub]), torch.stack([hub, leaves])], dim=1)
    x = torch.rand(LEAVES + 1, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    return x, edge_index
