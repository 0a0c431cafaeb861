"""Cluster-GCN (pymetis, cached), GraphSAINT (cached norms), neighbour sampling, rank sharding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import subgraph

from gnnzero.data import LoaderOptions, build_loader, load_dataset
from gnnzero.data import partition as partition_mod
from gnnzero.data.partition import PyMetisClusterData
from gnnzero.data.sharding import shard_batches

WORLD_SIZES = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def graph():
    return load_dataset("synthetic", num_nodes=1200, seed=3)


def _dense_x(dataset) -> torch.Tensor:
    return dataset.features.rows(torch.arange(dataset.num_nodes))


def test_metis_partition_is_cached_and_second_run_skips_metis(graph, tmp_path, monkeypatch):
    first = PyMetisClusterData(graph.structure(), 12, cache_dir=str(tmp_path),
                               fingerprint=graph.fingerprint())
    assert not first.metis_from_cache
    assert (tmp_path / graph.fingerprint() / "metis_12.pt").exists()

    def no_metis(*args, **kwargs):
        raise AssertionError("METIS ran although the partition was cached")

    monkeypatch.setattr(partition_mod, "metis_parts", no_metis)
    second = PyMetisClusterData(graph.structure(), 12, cache_dir=str(tmp_path),
                                fingerprint=graph.fingerprint())
    assert second.metis_from_cache
    assert torch.equal(first.partition.node_perm, second.partition.node_perm)
    # Another num_parts is another cache entry: METIS must run (and here, fail).
    with pytest.raises(AssertionError, match="METIS ran"):
        PyMetisClusterData(graph.structure(), 6, cache_dir=str(tmp_path),
                           fingerprint=graph.fingerprint())


def test_metis_parts_are_balanced_and_cut_fewer_edges_than_random(graph):
    parts = partition_mod.metis_parts(graph.edge_index, graph.num_nodes, 8)
    sizes = torch.bincount(parts, minlength=8)
    assert sizes.sum() == graph.num_nodes and sizes.max() <= 1.1 * graph.num_nodes / 8
    row, col = graph.edge_index
    cut = float((parts[row] != parts[col]).float().mean())
    assert cut < 0.5 * (1 - 1 / 8)         # a random 8-way split cuts 7/8 of the edges


def test_cluster_batches_hold_several_clusters_with_induced_edges_and_store_rows(graph, tmp_path):
    opts = LoaderOptions(kind="cluster", num_parts=12, clusters_per_batch=3,
                         cache_dir=str(tmp_path))
    loader = build_loader(graph, opts)
    data = loader.cluster_data
    x = _dense_x(graph)
    part_of = torch.empty(graph.num_nodes, dtype=torch.long)
    ptr = data.partition.partptr
    for part in range(12):
        part_of[data.partition.node_perm[ptr[part]:ptr[part + 1]]] = part
    sizes = torch.bincount(part_of, minlength=12)
    seen = []
    for batch in loader.epoch(0):
        seen.append(batch.n_id)
        parts = part_of[batch.n_id].unique()
        assert parts.numel() == 3 and batch.num_nodes == int(sizes[parts].sum())  # 3 whole clusters
        ref_edges, _ = subgraph(batch.n_id, graph.edge_index, relabel_nodes=True,
                                num_nodes=graph.num_nodes)
        ours = {tuple(e) for e in batch.edge_index.t().tolist()}
        assert ours == {tuple(e) for e in ref_edges.t().tolist()}
        assert torch.equal(batch.x, x[batch.n_id])
        assert torch.equal(batch.y, graph.y[batch.n_id])
        assert torch.equal(batch.loss_mask, graph.masks["train_mask"][batch.n_id])
    assert len(seen) == len(loader) == 4
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(graph.num_nodes))
    nbytes = data.nbytes()
    assert nbytes["index"] == graph.num_edges * 8 and nbytes["edge_perm"] == 0


def test_num_parts_larger_than_nodes_is_refused(graph):
    with pytest.raises(ValueError, match=r"num_parts=1300 is larger than the node count 1200 "
                                         r"\(by 100\)"):
        build_loader(graph, LoaderOptions(kind="cluster", num_parts=1300))


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_shards_cover_every_item_once_with_equal_steps(world):
    for num_items, per_batch in ((37, 2), (100, 7), (8, 1)):
        epochs = []
        for epoch in range(2):
            shards = [shard_batches(num_items, world, r, per_batch, epoch, seed=5)
                      for r in range(world)]
            assert len({len(s) for s in shards}) == 1                # equal steps per rank
            assert all(len(g) > 0 for s in shards for g in s)         # no empty batch
            flat = [np.concatenate(s) for s in shards]
            for a in range(world):
                for b in range(a + 1, world):
                    assert not set(flat[a]) & set(flat[b])            # disjoint shards
            assert sorted(np.concatenate(flat).tolist()) == list(range(num_items))
            epochs.append(np.concatenate([g for s in shards for g in s]))
        if num_items > 8:
            assert not np.array_equal(epochs[0], epochs[1])           # reshuffled per epoch


@pytest.fixture(scope="module")
def cluster_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("metis"))


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_cluster_loader_visits_every_cluster_once_per_epoch_across_ranks(graph, cluster_cache,
                                                                        world):
    opts = LoaderOptions(kind="cluster", num_parts=20, clusters_per_batch=2,
                         cache_dir=cluster_cache)
    loaders = [build_loader(graph, opts, rank=r, world_size=world, seed=1) for r in range(world)]
    assert len({len(loader) for loader in loaders}) == 1
    orders = []
    for epoch in range(2):
        per_rank = [[b.n_id for b in loader.epoch(epoch)] for loader in loaders]
        assert [len(ids) for ids in per_rank] == [len(loaders[0])] * world
        everything = torch.cat([n for ids in per_rank for n in ids])
        assert torch.equal(everything.sort().values, torch.arange(graph.num_nodes))
        orders.append(torch.cat(per_rank[0]))
    assert not torch.equal(orders[0], orders[1])


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_neighbor_seeds_sharded_disjoint_equal_steps(graph, world):
    pytest.importorskip("torch_sparse")
    opts = LoaderOptions(kind="neighbor", batch_size=64, num_neighbors=[3, 2])
    loaders = [build_loader(graph, opts, rank=r, world_size=world, seed=2) for r in range(world)]
    train = graph.masks["train_mask"].nonzero().view(-1)
    firsts = []
    for epoch in range(2):
        seeds, steps = [], []
        for loader in loaders:
            batches = list(loader.epoch(epoch))
            steps.append(len(batches))
            for b in batches:
                seeds.append(b.n_id[:b.batch_size])
                assert int(b.loss_mask.sum()) == b.batch_size
        assert len(set(steps)) == 1 and steps[0] == len(loaders[0])
        assert torch.equal(torch.cat(seeds).sort().values, train)    # each seed exactly once
        firsts.append(torch.cat(seeds))
    assert not torch.equal(firsts[0], firsts[1])


@pytest.fixture(scope="module")
def saint_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saint"))


@pytest.mark.parametrize("kind", ["saint-rw", "saint-node", "saint-edge"])
def test_saint_norms_cached_and_attached_as_loss_and_edge_weights(graph, saint_cache, kind):
    pytest.importorskip("torch_sparse")
    opts = LoaderOptions(kind=kind, batch_size=100, walk_length=2, sample_coverage=5,
                         cache_dir=saint_cache)
    first = build_loader(graph, opts, seed=0)
    second = build_loader(graph, opts, seed=0)
    assert not first.norm_from_cache and second.norm_from_cache
    assert torch.equal(first.sampler.node_norm, second.sampler.node_norm)
    x = _dense_x(graph)
    node_norm, edge_norm = second.sampler.node_norm, second.sampler.edge_norm
    edge_ids = {tuple(e): i for i, e in enumerate(graph.edge_index.t().tolist())}
    batch = next(iter(second.epoch(0)))
    assert torch.equal(batch.loss_weight, node_norm[batch.n_id])
    glob = batch.n_id[batch.edge_index].t().tolist()
    ids = torch.tensor([edge_ids[tuple(e)] for e in glob])       # every batch edge is real
    assert torch.equal(batch.edge_weight, edge_norm[ids])
    assert torch.equal(batch.x, x[batch.n_id])
    assert torch.equal(batch.loss_mask, graph.masks["train_mask"][batch.n_id])


def test_saint_steps_equal_on_every_rank(graph, saint_cache):
    pytest.importorskip("torch_sparse")
    for world in WORLD_SIZES:
        opts = LoaderOptions(kind="saint-node", batch_size=50, sample_coverage=5,
                             cache_dir=saint_cache)
        loaders = [build_loader(graph, opts, rank=r, world_size=world) for r in range(world)]
        steps = [sum(1 for _ in loader.epoch(1)) for loader in loaders]
        assert steps == [len(loaders[0])] * world
        assert steps[0] == max(1, graph.num_nodes // (50 * world))
        if world > 1:                      # ranks draw different subgraphs
            a, b = (next(iter(loaders[r].epoch(1))).n_id for r in (0, 1))
            assert not torch.equal(a, b)


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


def test_saint_loss_is_node_norm_weighted_sum_over_train_nodes(graph, saint_cache):
    pytest.importorskip("torch_sparse")
    from gnnzero.engine.batches import node_loss

    opts = LoaderOptions(kind="saint-rw", batch_size=100, walk_length=2, sample_coverage=5,
                         cache_dir=saint_cache)
    batch = next(iter(build_loader(graph, opts).epoch(0)))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch.num_nodes, graph.num_classes, generator=gen)
    expected = 0.0                                       # reference: a plain loop, GraphSAINT eq. 6
    for v in batch.train_mask.nonzero().view(-1).tolist():
        log_p = logits[v] - torch.logsumexp(logits[v], dim=0)
        expected += float(batch.node_norm[v]) * -float(log_p[batch.y[v]])
    assert float(node_loss(logits, batch)) == pytest.approx(expected, rel=1e-5)
