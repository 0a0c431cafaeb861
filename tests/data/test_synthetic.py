"""The synthetic graph generator (the default --dataset)."""
from __future__ import annotations

import torch

from gnnzero.data import load_dataset


def test_synthetic_is_default_deterministic_and_sized_by_flags():
    a = load_dataset("synthetic", num_nodes=2000, avg_degree=20, words_per_node=5)
    b = load_dataset("synthetic", num_nodes=2000, avg_degree=20, words_per_node=5)
    assert torch.equal(a.edge_index, b.edge_index) and a.fingerprint() == b.fingerprint()
    row, col = a.edge_index
    assert bool((row != col).all())                                   # no self-loops
    assert a.edge_index.size(1) == torch.unique(row * 2000 + col).numel()  # no duplicates
    reverse = set((col * 2000 + row).tolist())
    assert reverse == set((row * 2000 + col).tolist())                # undirected
    assert 18 < a.num_edges / 2000 <= 20                              # mean degree ~ 20
    x = a.features.rows(torch.arange(2000))
    assert 4.5 < float((x != 0).sum()) / 2000 <= 5.0                  # ~5 words a node
    assert type(a.features).__name__ == "SparseFeatureStore"
