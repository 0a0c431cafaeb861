"""Heterogeneous neighbour sampling: a paper/author HeteroData through PyG's NeighborLoader."""
from __future__ import annotations

import pytest
import torch

from gnnzero.data import load_dataset
from gnnzero.data.hetero import HeteroNeighborLoader, synthetic_hetero


@pytest.fixture(scope="module")
def hetero():
    pytest.importorskip("torch_sparse")
    return synthetic_hetero(load_dataset("synthetic", num_nodes=600, seed=1), num_authors=150)


def test_synthetic_hetero_graph_is_consistent(hetero):
    writes = hetero["author", "writes", "paper"].edge_index
    assert torch.equal(hetero["paper", "rev_writes", "author"].edge_index, writes.flip(0))
    assert int(writes[0].max()) < 150 and int(writes[1].max()) < 600
    # Author features are the mean of the author's papers' features (reference: a loop).
    for a in (0, 17, 149):
        papers = writes[1][writes[0] == a]
        assert torch.allclose(hetero["author"].x[a], hetero["paper"].x[papers].mean(0))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_hetero_seeds_sharded_and_sampled_edges_real(hetero, world):
    loaders = [HeteroNeighborLoader(hetero, "paper", [4, 3], batch_size=40, rank=r,
                                    world_size=world, seed=0) for r in range(world)]
    relations = {et: set(map(tuple, hetero[et].edge_index.t().tolist()))
                 for et in hetero.edge_types}
    seeds, steps = [], []
    for loader in loaders:
        batches = list(loader.epoch(0))
        steps.append(len(batches))
        for batch in batches:
            paper = batch["paper"]
            seeds.append(paper.n_id[:paper.batch_size])
            assert int(paper.loss_mask.sum()) == paper.batch_size
            assert torch.equal(paper.x, hetero["paper"].x[paper.n_id])
            assert torch.equal(batch["author"].x, hetero["author"].x[batch["author"].n_id])
            for (src, rel, dst) in batch.edge_types:
                local = batch[src, rel, dst].edge_index
                glob = torch.stack([batch[src].n_id[local[0]], batch[dst].n_id[local[1]]])
                assert all(tuple(e) in relations[(src, rel, dst)] for e in glob.t().tolist())
            assert batch["author", "writes", "paper"].edge_index.size(1) > 0
    assert len(set(steps)) == 1
    train = hetero["paper"].train_mask.nonzero().view(-1)
    assert torch.equal(torch.cat(seeds).sort().values, train)


def test_unknown_target_type_is_refused(hetero):
    with pytest.raises(ValueError, match="target node type 'venue' is not in the graph"):
        HeteroNeighborLoader(hetero, "venue", [2], batch_size=8)


@pytest.mark.parametrize("kind", ["sparse", "mmap"])
def test_hetero_neighbor_loader_reads_features_from_our_stores(hetero, kind, tmp_path):
    from torch_geometric.loader import NeighborLoader

    from gnnzero.data.feature_store import MmapFeatureStore, SparseFeatureStore
    from gnnzero.data.hetero import hetero_stores

    store = SparseFeatureStore() if kind == "sparse" else MmapFeatureStore(str(tmp_path))
    pair = hetero_stores(hetero, store)
    loader = NeighborLoader(pair, num_neighbors=[3, 3], input_nodes=("paper", torch.arange(40)),
                            batch_size=20)
    for batch in loader:
        for node_type in ("paper", "author"):
            assert torch.equal(batch[node_type].x, hetero[node_type].x[batch[node_type].n_id])
        assert batch["author", "writes", "paper"].edge_index.size(1) > 0
