"""PinSAGE importance neighbourhoods: random-walk visit counts, exactly and in expectation, and
the model's use of them as edge weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnzero.models import build_model, pinsage_neighbourhood
from gnnzero.models.importance import in_neighbour_csr, random_walk_visit_counts
from tests.models.common import random_graph


def test_random_walk_counts_exact_on_deterministic_graph():
    # Every node has one in-neighbour, so walks are deterministic:
    # 0 <- 1, 1 <- 2, 2 <- 1, 3 <- 0; node 4 has none (walks from it stop at once).
    edge_index = torch.tensor([[1, 2, 1, 0], [0, 1, 2, 3]])
    walks, length = 7, 5
    new_index, weight = pinsage_neighbourhood(edge_index, 5, num_walks=walks,
                                              walk_length=length, top_k=2)
    got = {(int(s), int(d)): float(w) for s, d, w in zip(*new_index, weight)}
    # from 0: 1,2,1,2,1 -> {1: 3, 2: 2};  from 1: 2,1,2,1,2 -> {2: 3} (returns to 1 not counted)
    # from 2: {1: 3};  from 3: 0,1,2,1,2 -> {0: 1, 1: 2, 2: 2}, top 2 = {1, 2}
    assert got == pytest.approx({(1, 0): 3 / 5, (2, 0): 2 / 5, (2, 1): 1.0, (1, 2): 1.0,
                                 (1, 3): 0.5, (2, 3): 0.5})
    csr = in_neighbour_csr(edge_index, 5)
    counts = random_walk_visit_counts(csr.indptr, csr.indices, walks, length).toarray()
    assert counts[3].tolist() == [walks, 2 * walks, 2 * walks, 0, 0]
    assert counts[4].sum() == 0


def test_random_walk_counts_match_transition_matrix_expectation():
    """E[C[v,u]] = W * sum_{t=1..L} (P^t)[v,u] (u != v), P the row-normalised adjacency.

    C is a sum over W independent walks of X in [0, L], and Var(X) <= E[X^2] <= L E[X],
    so Var(C) <= L E[C]; the test allows 5 such standard deviations per entry.
    """
    und = [(0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (4, 5), (0, 5)]
    edges = torch.tensor(und + [(b, a) for a, b in und]).T
    n, walks, length = 6, 4000, 3
    adj = np.zeros((n, n))
    adj[edges[1].numpy(), edges[0].numpy()] = 1.0
    transition = adj / adj.sum(1, keepdims=True)
    expected = walks * sum(np.linalg.matrix_power(transition, t) for t in range(1, length + 1))
    np.fill_diagonal(expected, 0.0)
    csr = in_neighbour_csr(edges, n)
    counts = random_walk_visit_counts(csr.indptr, csr.indices, walks, length, seed=3).toarray()
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(length * expected) + 1e-9)
    # top-k by expectation where the k-th and (k+1)-th expectations are well separated
    new_index, weight = pinsage_neighbourhood(edges, n, num_walks=walks, walk_length=length,
                                              top_k=2, seed=3)
    for v in range(n):
        order = np.argsort(-expected[v])
        if expected[v, order[1]] - expected[v, order[2]] > 10 * math.sqrt(length * walks):
            assert set(new_index[0, new_index[1] == v].tolist()) == set(order[:2].tolist())
        assert float(weight[new_index[1] == v].sum()) == pytest.approx(1.0)


def test_pinsage_model_uses_importance_as_edge_weights():
    torch.manual_seed(0)
    model = build_model("pinsage", 12, 8, 3, 2, dropout=0.0).eval()
    x = torch.randn(30, 12)
    edge_index, _ = random_graph()
    importance_index, importance = pinsage_neighbourhood(
        edge_index, 30, model.num_walks, model.walk_length, model.top_k, model.walk_seed)
    with torch.no_grad():
        implicit = model(x, edge_index)
        explicit = model(x, importance_index, importance)
    torch.testing.assert_close(implicit, explicit)
