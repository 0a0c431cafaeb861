"""A small synthetic graph as the numpy/scipy arrays a user would save to a .pt / .npz file."""
from __future__ import annotations

from gnnzero.data.synthetic import SyntheticSpec, make_synthetic_graph


def small_graph(n: int = 500):
    edge_index, x, y, masks = make_synthetic_graph(SyntheticSpec(num_nodes=n, num_classes=4))
    return edge_index.numpy(), x, y.numpy(), {k: v.numpy() for k, v in masks.items()}
