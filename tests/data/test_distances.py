"""Hop distances by truncated BFS against networkx, distance-matched non-edges, and the
common-neighbours check: a scorer that sees only shared neighbours recalls distance-2 edges
and nothing farther."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from gnnzero.data.csr import Topology
from gnnzero.data.distances import (BUCKETS, FAR, MAX_DEPTH, UNREACHABLE, bucket_of,
                                    distances_and_matches, pair_distances)


def _graph(seed: int = 0) -> tuple[nx.Graph, Topology]:
    """Two sparse random components (one with long paths) and a few isolated nodes."""
    g = nx.union(nx.gnm_random_graph(120, 150, seed=seed),
                 nx.relabel_nodes(nx.path_graph(30), lambda v: v + 120))
    g.add_nodes_from(range(150, 155))
    edges = torch.tensor(list(g.edges)).t()
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)
    return g, Topology.from_edge_index(edge_index, g.number_of_nodes())


def _reference(g: nx.Graph, u: int, v: int) -> int:
    lengths = nx.single_source_shortest_path_length(g, u, cutoff=MAX_DEPTH)
    if v in lengths:
        return lengths[v]
    return FAR if nx.has_path(g, u, v) else UNREACHABLE


@pytest.mark.parametrize("seed", [0, 1])
def test_distances_match_networkx(seed):
    g, topology = _graph(seed)
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, g.number_of_nodes(), size=(2, 400))
    pairs[:, :30] = [[120] * 30, np.arange(120, 150)]       # along the path: 0 .. 29 hops
    got = pair_distances(topology, pairs)
    expected = [_reference(g, int(u), int(v)) for u, v in pairs.T]
    assert got.tolist() == expected
    assert {FAR, UNREACHABLE, 2, 3, 4} <= set(expected)     # every bucket is exercised


def test_bucket_names():
    assert [BUCKETS[i] for i in bucket_of(np.array([1, 2, 3, 4, FAR, UNREACHABLE]))] == \
        ["2", "2", "3", "4", "≥5", "unreachable"]


def test_matched_negatives_share_the_bucket_and_avoid_known_edges():
    g, topology = _graph(3)
    rng = np.random.default_rng(3)
    pairs = rng.integers(0, 150, size=(2, 300))
    exclude = {(int(u), int(v)) for u, v in pairs[:, :40].T}   # pretend these are edges
    distances, matched, matched_d = distances_and_matches(topology, pairs, exclude, seed=0)
    assert 0.8 * pairs.shape[1] < matched.shape[1] <= pairs.shape[1]
    for (u, w), d in zip(matched.T, matched_d):
        assert bucket_of(np.array([_reference(g, int(u), int(w))]))[0] == bucket_of(
            np.array([d]))[0]
        assert (int(u), int(w)) not in exclude and (int(w), int(u)) not in exclude
    assert set(matched[0].tolist()) <= set(pairs[0].tolist())   # from the same sources


def test_common_neighbours_recall_only_distance_two(cora_link_split):
    """Common neighbours in the training graph: > 0 only for pairs at distance 2.  With the
    threshold chosen on validation, test recall is nonzero in the distance-2 bucket only."""
    from gnnzero.tasks.link import hidden_pairs
    from gnnzero.tasks.link_metrics import youden_threshold, bucket_table

    dataset = cora_link_split
    split = dataset.link_split
    n = dataset.num_nodes
    import scipy.sparse as sp

    adj = sp.csr_matrix((np.ones(dataset.num_edges), np.asarray(dataset.topology.indices),
                         dataset.topology.indptr), shape=(n, n))

    def common(pairs):
        p = pairs.numpy()
        return np.asarray(adj[p[0]].multiply(adj[p[1]]).sum(axis=1)).ravel()

    threshold = youden_threshold(common(split.val.pos), common(split.val.neg))
    assert threshold > 0
    test = split.test.pos.numpy()
    d, matched, md = distances_and_matches(dataset.topology, test, hidden_pairs(split), seed=0)
    table = bucket_table(common(split.test.pos), bucket_of(d),
                         common(torch.from_numpy(matched)), bucket_of(md), threshold, 1)
    recall = {row["bucket"]: row["recall"] for row in table}
    assert recall["2"] > 0.3
    assert all(r == 0 for bucket, r in recall.items() if bucket != "2"), recall
    assert set(recall) == set(BUCKETS)   # Cora's test edges reach every bucket
