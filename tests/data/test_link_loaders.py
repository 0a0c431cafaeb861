"""Link batches: every loader's message-passing edges come from the training graph only (no
hidden edge), positives are training edges, negatives are pairs labelled 0, the ranks'
positives are disjoint, and batches are reproducible from the seed."""
from __future__ import annotations

import pytest
import torch

from gnnzero.data.link_loaders import build_link_loader
from gnnzero.data.link_split import split_edges
from gnnzero.data.options import LoaderOptions
from gnnzero.errors import GnnZeroError


def _pairs(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in edge_index.t().tolist()}


@pytest.fixture(scope="module")
def link_graph(graph, tmp_path_factory):
    return split_edges(graph, 0.1, 0.1, seed=0)


def _loaders(dataset, kind: str, tmp_path, world: int = 2, **opts):
    options = LoaderOptions(kind=kind, cache_dir=str(tmp_path), **opts)
    return [build_link_loader(dataset, options, rank, world, seed=1, neg_ratio=1.0)
            for rank in range(world)]


def _check_epoch(loaders, dataset) -> set[tuple[int, int]]:
    split = dataset.link_split
    hidden = _pairs(split.val.pos) | _pairs(split.test.pos)
    train = _pairs(split.train_pos)
    seen: list[set] = []
    for loader in loaders:
        mine = set()
        batches = list(loader.epoch(0))
        assert len(batches) == len(loader)
        for batch in batches:
            glob = batch.n_id
            message = _pairs(glob[batch.edge_index])
            assert not message & hidden, "a hidden edge reached message passing"
            assert message <= train
            labels = batch.edge_label
            assert labels.dtype == torch.float32 and set(labels.tolist()) <= {0.0, 1.0}
            pos = _pairs(glob[batch.edge_label_index[:, labels == 1]])
            assert pos and pos <= train
            neg = glob[batch.edge_label_index[:, labels == 0]]
            assert neg.size(1) > 0
            mine |= pos
        seen.append(mine)
    assert not seen[0] & seen[1], "two ranks scored the same positive edges"
    return seen[0] | seen[1]


def test_full_batch_covers_every_training_edge_once_per_epoch(link_graph, tmp_path):
    loaders = _loaders(link_graph, "full", tmp_path)
    covered = _check_epoch(loaders, link_graph)
    assert covered == _pairs(link_graph.link_split.train_pos)
    batch = next(loaders[0].epoch(0))
    negatives = _pairs(batch.edge_label_index[:, batch.edge_label == 0])
    assert not negatives & _pairs(link_graph.edge_index)   # negative_sampling: non-edges


def test_cluster_batches_carry_their_inner_training_edges(link_graph, tmp_path):
    loaders = _loaders(link_graph, "cluster", tmp_path, num_parts=8, clusters_per_batch=2)
    _check_epoch(loaders, link_graph)
    for batch in loaders[0].epoch(0):
        inner = batch.edge_index[:, batch.edge_index[0] < batch.edge_index[1]]
        assert torch.equal(batch.edge_label_index[:, batch.edge_label == 1], inner)
        negatives = batch.edge_label_index[:, batch.edge_label == 0]
        assert not _pairs(negatives) & _pairs(batch.edge_index)
    again = [b.edge_label_index for b in _loaders(link_graph, "cluster", tmp_path, num_parts=8,
                                                  clusters_per_batch=2)[0].epoch(0)]
    assert all(torch.equal(a, b.edge_label_index)
               for a, b in zip(again, loaders[0].epoch(0)))


def test_link_neighbor_batches(link_graph, tmp_path):
    pytest.importorskip("torch_sparse")
    loaders = _loaders(link_graph, "neighbor", tmp_path, batch_size=256, num_neighbors=[5, 5])
    covered = _check_epoch(loaders, link_graph)
    assert covered == _pairs(link_graph.link_split.train_pos)


def test_saint_is_refused_for_links(link_graph, tmp_path):
    with pytest.raises(GnnZeroError, match="--task link trains on --loader full / cluster / "
                                           "neighbor, not --loader saint-rw"):
        _loaders(link_graph, "saint-rw", tmp_path)
