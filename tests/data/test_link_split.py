"""The hidden-edge split: no validation or test edge in the training graph, PyG's sizes,
seeded, undirected, and a one-line refusal when a split would be empty."""
from __future__ import annotations

import random

import pytest
import torch

from gnnzero.data.link_split import split_edges
from gnnzero.errors import GnnZeroError


def _undirected_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in edge_index.t().tolist()}


def test_hidden_edges_are_not_in_the_training_graph(graph):
    split_ds = split_edges(graph, 0.1, 0.2, seed=0)
    split = split_ds.link_split
    train_graph = _undirected_set(split_ds.edge_index)
    hidden = _undirected_set(split.val.pos) | _undirected_set(split.test.pos)
    assert hidden and not hidden & train_graph
    # the training graph is exactly the training positives, in both directions
    assert train_graph == _undirected_set(split.train_pos)
    assert split_ds.num_edges == 2 * split.train_pos.size(1)
    everything = _undirected_set(graph.edge_index)
    assert train_graph | hidden == everything
    u = len(everything)
    assert (split.val.pos.size(1), split.test.pos.size(1)) == (int(0.1 * u), int(0.2 * u))
    # validation / test negatives are non-edges of the whole graph, one per positive
    assert not _undirected_set(split.val.neg) & everything
    assert not _undirected_set(split.test.neg) & everything
    assert split.val.neg.size(1) == split.val.pos.size(1)
    # features, labels and the node count are those of the graph
    assert split_ds.num_nodes == graph.num_nodes and split_ds.features is graph.features


def test_test_edges_are_scored_over_training_and_validation_edges(graph):
    """PyG's protocol: validation messages use the training edges, test messages the training
    and validation edges; a test edge is never a message."""
    from gnnzero.data.link_split import test_graph

    dataset = split_edges(graph, 0.1, 0.2, seed=1)
    split = dataset.link_split
    at_test = test_graph(dataset)
    assert test_graph(dataset) is at_test                       # built once
    assert _undirected_set(at_test.edge_index) == \
        _undirected_set(split.train_pos) | _undirected_set(split.val.pos)
    assert not _undirected_set(at_test.edge_index) & _undirected_set(split.test.pos)
    assert at_test.features is dataset.features and at_test.num_nodes == dataset.num_nodes


def test_split_is_seeded(graph):
    a, b = (split_edges(graph, 0.1, 0.1, seed=5).link_split for _ in range(2))
    c = split_edges(graph, 0.1, 0.1, seed=6).link_split
    assert torch.equal(a.test.pos, b.test.pos) and torch.equal(a.val.neg, b.val.neg)
    assert not torch.equal(a.test.pos, c.test.pos)
    before, python_before = torch.get_rng_state(), random.getstate()
    split_edges(graph, 0.1, 0.1, seed=5)
    assert torch.equal(before, torch.get_rng_state())   # the global streams are untouched
    assert python_before == random.getstate()


def test_directed_input_becomes_undirected_and_self_loops_go():
    from gnnzero.data.datasets import _finish

    n = 40
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])  # one direction only
    loops = torch.stack([torch.arange(5), torch.arange(5)])
    ds = _finish("ring", torch.cat([ring, loops], 1), torch.eye(n), torch.zeros(n),
                 {"train_mask": torch.ones(n, dtype=torch.bool)}, 2, "dense")
    split = split_edges(ds, 0.1, 0.1, seed=0)
    assert split.link_split.directed_input
    assert split.link_split.train_pos.size(1) + 8 == n
    assert not bool((split.edge_index[0] == split.edge_index[1]).any())


def test_too_few_edges_is_one_line():
    from gnnzero.data.datasets import _finish

    n = 6
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    ds = _finish("tiny", edges, torch.eye(n), torch.zeros(n),
                 {"train_mask": torch.ones(n, dtype=torch.bool)}, 2, "dense")
    with pytest.raises(GnnZeroError, match=r"^--task link: the graph has 2 undirected edges, "
                                           r"too few .*--val-fraction") as err:
        split_edges(ds, 0.05, 0.1, seed=0)
    assert "\n" not in str(err.value)
