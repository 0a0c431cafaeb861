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


# ------------------------------------------------------------- the CLI's dataset side

def _labelled_file(tmp_path, changes=None):
    """A small author/paper HeteroData file (papers labelled), with ``changes`` applied."""
    from torch_geometric.data import HeteroData

    g = torch.Generator().manual_seed(0)
    data = HeteroData()
    data["paper"].x = torch.randn(40, 5, generator=g)
    data["paper"].y = torch.randint(0, 3, (40,), generator=g)
    for i, name in enumerate(("train_mask", "val_mask", "test_mask")):
        data["paper"][name] = torch.arange(40) % 3 == i
    data["author"].x = torch.randn(12, 4, generator=g)
    writes = torch.stack([torch.randint(0, 12, (60,), generator=g),
                          torch.randint(0, 40, (60,), generator=g)])
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "rev_writes", "author"].edge_index = writes.flip(0)
    for (node_type, key), value in (changes or {}).items():
        if value is None:
            del data[node_type][key]
        else:
            data[node_type][key] = value
    path = tmp_path / "hetero.pt"
    torch.save(data, path)
    return path, data


def test_a_heterodata_file_loads_with_its_labelled_type_as_target(tmp_path):
    from gnnzero.data.hetero import is_hetero_source, load_hetero

    path, data = _labelled_file(tmp_path)
    assert is_hetero_source(str(path)) and is_hetero_source("synthetic-hetero")
    torch.save({"edge_index": torch.zeros(2, 0, dtype=torch.long)}, tmp_path / "plain.pt")
    assert not is_hetero_source(str(tmp_path / "plain.pt"))
    dataset = load_hetero(str(path), None, 0, 0)
    assert dataset.target == "paper" and dataset.num_classes == int(data["paper"].y.max()) + 1
    assert dataset.num_nodes == 52 and dataset.num_edges == 120
    assert dataset.num_features == {"paper": 5, "author": 4}
    assert torch.equal(dataset.y, data["paper"].y)
    assert dataset.fingerprint() == load_hetero(str(path), "paper", 0, 0).fingerprint()
    moved = _labelled_file(tmp_path, {("author", "x"): torch.randn(12, 4)})[0]
    assert load_hetero(str(moved), None, 0, 0).fingerprint() == dataset.fingerprint()  # x only
    data["author", "writes", "paper"].edge_index[1, 0] += 1
    torch.save(data, path)
    assert load_hetero(str(path), None, 0, 0).fingerprint() != dataset.fingerprint()


@pytest.mark.parametrize("changes, target, needle", [
    ({}, "venue", "--target-type venue is not a node type of hetero.pt (paper, author)"),
    ({}, "author", "--target-type author has no labels y in hetero.pt; choose one of paper"),
    ({("author", "y"): torch.zeros(12, dtype=torch.long)}, None,
     "2 node types have labels y (paper, author); name the one to learn with --target-type"),
    ({("author", "x"): None}, None, "node type 'author' needs dense float features x"),
    ({("paper", "val_mask"): None}, None, "node type 'paper' lacks val_mask"),
    ({("paper", "x"): torch.full((40, 5), float("nan"))}, None, "x has 200 NaN/inf entries"),
])
def test_bad_heterodata_files_get_one_line_errors(tmp_path, changes, target, needle):
    from gnnzero.data.hetero import load_hetero
    from gnnzero.errors import GnnZeroError

    path = _labelled_file(tmp_path, changes)[0]
    with pytest.raises(GnnZeroError) as info:
        load_hetero(str(path), target, 0, 0)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_edge_ids_outside_their_node_type_are_refused(tmp_path):
    from gnnzero.data.hetero import load_hetero
    from gnnzero.errors import GnnZeroError

    path, data = _labelled_file(tmp_path)
    data["author", "writes", "paper"].edge_index[0, 3] = 12     # 12 authors: ids 0..11
    torch.save(data, path)
    with pytest.raises(GnnZeroError, match="author/writes/paper: row 0 holds ids outside "
                                           r"\[0, 12\) of node type 'author'"):
        load_hetero(str(path), None, 0, 0)


def test_synthetic_hetero_follows_the_generator_settings():
    from gnnzero.data.hetero import load_hetero

    dataset = load_hetero("synthetic-hetero", None, 400, 3, num_classes=4, num_features=12)
    assert dataset.target == "paper" and dataset.num_classes == 4
    assert dataset.data["paper"].num_nodes == 400 and dataset.data["author"].num_nodes == 100
    assert dataset.num_features == {"paper": 12, "author": 12}
    again = load_hetero("synthetic-hetero", None, 400, 3, num_classes=4, num_features=12)
    assert again.fingerprint() == dataset.fingerprint()
