"""Loaders: Cluster-GCN batches, GraphSAINT (cached norms), neighbour sampling, equal steps and
disjoint shards on every rank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import subgraph

from gnnzero.data import LoaderOptions, build_loader


WORLD_SIZES = (1, 2, 4, 8)


def _dense_x(dataset) -> torch.Tensor:
    return dataset.features.rows(torch.arange(dataset.num_nodes))


def test_cluster_batches_hold_several_clusters_with_induced_edges_and_store_rows(graph, tmp_path):
    opts = LoaderOptions(kind="cluster", num_parts=12, clusters_per_batch=3,
                         cache_dir=str(tmp_path))
    loader = build_loader(graph, opts)
    x = _dense_x(graph)
    part_of = torch.from_numpy(np.asarray(loader.partition.part, dtype=np.int64))
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
        assert torch.equal(batch.x.to_dense(), x[batch.n_id])   # sparse CSR rows
        assert torch.equal(batch.y, graph.y[batch.n_id])
        assert torch.equal(batch.loss_mask, graph.masks["train_mask"][batch.n_id])
    assert len(seen) == len(loader) == 4
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(graph.num_nodes))


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
    opts = LoaderOptions(kind=kind, batch_size=100, walk_length=2, sample_coverage=5,
                         cache_dir=saint_cache)
    first = build_loader(graph, opts, seed=0)
    second = build_loader(graph, opts, seed=0)
    assert isinstance(second.norms.node, np.memmap)          # mapped from the cache
    np.testing.assert_array_equal(first.norms.node, second.norms.node)
    x = _dense_x(graph)
    node_norm, edge_norm = second.norms.node, second.norms.edge
    # The CSR position of each edge of graph.edge_index (grouped by target, stable).
    order = np.argsort(graph.edge_index[1].numpy(), kind="stable")
    position_of = {tuple(graph.edge_index[:, i].tolist()): p for p, i in enumerate(order)}
    for step, batch in enumerate(second.epoch(0)):
        assert torch.equal(batch.loss_weight, torch.from_numpy(node_norm[batch.n_id.numpy()]))
        glob = batch.n_id[batch.edge_index].t().tolist()
        positions = [position_of[tuple(e)] for e in glob]       # every batch edge is real
        assert torch.equal(batch.edge_weight, torch.from_numpy(edge_norm[positions]))
        assert torch.equal(batch.x.to_dense(), x[batch.n_id])
        assert torch.equal(batch.loss_mask, graph.masks["train_mask"][batch.n_id])
        if step == 1:
            break


def test_saint_batches_are_reproducible_resumable_and_prefetch_safe(graph):
    """Each step draws from its own generator: the same batches on a rebuilt loader, the same
    tail when resumed mid-epoch, other batches in another epoch; no torch RNG is consumed."""
    opts = LoaderOptions(kind="saint-rw", batch_size=60, walk_length=2, sample_coverage=0)
    loader = build_loader(graph, opts, seed=3)
    assert loader.prefetch_safe and loader.norms is None
    state = torch.get_rng_state()
    whole = [b.n_id for b in loader.epoch(1)]
    assert torch.equal(state, torch.get_rng_state())
    resumed = [b.n_id for b in build_loader(graph, opts, seed=3).epoch(1, start=2)]
    assert len(whole) == len(loader) >= 3
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed))
    assert not torch.equal(whole[0], next(iter(loader.epoch(2))).n_id)
    assert "loss_weight" not in next(iter(loader.epoch(0)))     # no norms: plain mean loss


def test_saint_steps_equal_on_every_rank(graph, saint_cache):
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
