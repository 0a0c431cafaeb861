"""The scalable GraphSAINT edge sampler."""
from __future__ import annotations

import pytest
import torch


def test_saint_edge_sampler_draws_with_inverse_degree_probability():
    pytest.importorskip("torch_sparse")
    from torch_geometric.data import Data

    from gnnzero.data.saint import ScalableGraphSAINTEdgeSampler

    # A star (hub 0 with leaves 1..5) plus the edge 5-6, both directions.
    pairs = [(0, i) for i in range(1, 6)] + [(5, 6)]
    edge_index = torch.tensor(pairs + [(b, a) for a, b in pairs]).t()
    sampler = ScalableGraphSAINTEdgeSampler(Data(edge_index=edge_index, num_nodes=7),
                                            batch_size=1, num_steps=1, sample_coverage=0)
    deg = torch.bincount(edge_index[0], minlength=7).double()
    row, col, perm = sampler.adj.coo()
    expected = 1 / deg[row] + 1 / deg[col]                 # GraphSAINT paper, sec. 3.3
    expected /= expected.sum()
    torch.manual_seed(0)
    draws = 200_000
    nodes = sampler._sample_nodes(draws)                   # [col (source), row (target)] halves
    src, dst = nodes[draws:], nodes[:draws]
    key = src * 7 + dst
    freq = torch.bincount(key, minlength=49).double()[row * 7 + col] / draws
    assert torch.allclose(freq, expected, atol=4e-3)
