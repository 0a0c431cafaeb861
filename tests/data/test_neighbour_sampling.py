"""Neighbour sampling from the CSR: PyG ``NeighborLoader``'s batches (exactly, with fan-out -1;
in distribution, with a fan-out), uniform without replacement, reproducible and resumable,
and on a prepared directory without a private edge list."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from gnnzero.data import LoaderOptions, build_loader
from gnnzero.data.csr import Topology
from gnnzero.data.neighbour_sampling import sample_in_edges, sample_neighbourhood
from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset


def _global_edges(batch) -> set:
    n_id = batch.n_id
    return {(int(n_id[s]), int(n_id[t])) for s, t in batch.edge_index.t().tolist()}


def _pyg_batch(graph, seeds: torch.Tensor, fan_outs: list[int]):
    from torch_geometric.loader import NeighborLoader

    loader = NeighborLoader(graph.structure(), num_neighbors=fan_outs, input_nodes=seeds,
                            batch_size=seeds.numel())
    return next(iter(loader))


@pytest.mark.parametrize("fan_outs", [[-1], [-1, -1]])
def test_full_neighbourhoods_equal_pyg_neighbor_loader(graph, fan_outs):
    """Fan-out -1: the seeds first, then the same nodes hop by hop (PyG orders a target's
    neighbours its own way within a hop), and the same edges."""
    pytest.importorskip("torch_sparse")
    seeds = torch.tensor([5, 17, 3, 900, 41])
    ref = _pyg_batch(graph, seeds, fan_outs)
    ours = sample_neighbourhood(graph.topology, seeds.numpy(), fan_outs,
                                np.random.default_rng(0))
    assert ours.batch_size == ref.batch_size == 5
    assert torch.equal(ours.n_id[:5], ref.n_id[:5]) and ours.num_nodes == ref.num_nodes
    for hops in range(1, len(fan_outs) + 1):
        size = sample_neighbourhood(graph.topology, seeds.numpy(), fan_outs[:hops],
                                    np.random.default_rng(0)).num_nodes
        assert set(ours.n_id[:size].tolist()) == set(ref.n_id[:size].tolist())
    assert ours.edge_index.size(1) == ref.edge_index.size(1)
    assert _global_edges(ours) == _global_edges(ref)


def test_sampled_neighbourhoods_match_pyg_in_size(graph):
    """Fan-out [4, 3] over 150 seed batches: nodes and edges per batch as many as PyG's
    sampler gives on average (a different random stream, the same distribution)."""
    pytest.importorskip("torch_sparse")
    from torch_geometric.loader import NeighborLoader

    seeds = torch.arange(graph.num_nodes)[:1200:8]
    torch.manual_seed(0)
    ref = [(b.num_nodes, b.edge_index.size(1)) for b in
           NeighborLoader(graph.structure(), num_neighbors=[4, 3], input_nodes=seeds,
                          batch_size=1)]
    rng = np.random.default_rng(0)
    ours = [(b.num_nodes, b.edge_index.size(1)) for b in
            (sample_neighbourhood(graph.topology, [int(s)], [4, 3], rng) for s in seeds)]
    for i in range(2):
        ref_mean, ours_mean = np.mean([r[i] for r in ref]), np.mean([o[i] for o in ours])
        assert abs(ours_mean - ref_mean) < 0.05 * ref_mean, (i, ours_mean, ref_mean)


def test_each_target_gets_min_fanout_degree_distinct_true_in_edges(graph):
    """Hop 1 samples into the seeds, hop 2 into the nodes hop 1 added (the one-hop batch
    drawn from the same generator state names them); the last hop's nodes get no edges."""
    degree, seeds = graph.topology.in_degree(), np.arange(0, 1200, 37)
    batch = sample_neighbourhood(graph.topology, seeds, [3, 2], np.random.default_rng(1))
    hop1 = sample_neighbourhood(graph.topology, seeds, [3], np.random.default_rng(1)).n_id
    n_id, (src, dst) = batch.n_id.numpy(), batch.edge_index.numpy()
    assert np.array_equal(n_id[:hop1.numel()], hop1.numpy()) and len(set(n_id)) == n_id.size
    pairs = list(zip(n_id[src], n_id[dst]))
    assert set(pairs) <= set(zip(*graph.edge_index.numpy())) and len(set(pairs)) == len(pairs)
    got = np.bincount(dst, minlength=n_id.size)
    want = np.zeros(n_id.size, dtype=np.int64)
    want[:seeds.size] = np.minimum(3, degree[seeds])
    want[seeds.size:hop1.numel()] = np.minimum(2, degree[n_id[seeds.size:hop1.numel()]])
    assert np.array_equal(got, want)


def _shared_sources(num_targets: int, degree: int) -> Topology:
    """Targets ``degree .. degree + num_targets - 1``, each with the in-neighbours
    ``0 .. degree - 1``."""
    sources = torch.arange(degree).repeat(num_targets)
    targets = torch.arange(degree, degree + num_targets).repeat_interleave(degree)
    return Topology.from_edge_index(torch.stack([sources, targets]), degree + num_targets)


@pytest.mark.parametrize("degree", [10, 100], ids=["random_keys", "random_offsets"])
def test_in_neighbours_are_drawn_uniformly_without_replacement(degree):
    """Fan-out 3 from 3,000 targets sharing ``degree`` in-neighbours (both ways of drawing:
    keys up to 4x the fan-out, offsets above): each target gets 3 distinct ones, and every
    neighbour is drawn equally often (chi-square)."""
    topology = _shared_sources(3000, degree)
    position, target_pos = sample_in_edges(topology, np.arange(degree, degree + 3000), 3,
                                           np.random.default_rng(0))
    picked = np.asarray(topology.indices)[position]
    assert np.array_equal(np.bincount(target_pos), np.full(3000, 3))
    assert all(np.unique(row).size == 3 for row in picked.reshape(3000, 3))
    assert stats.chisquare(np.bincount(picked, minlength=degree)).pvalue > 1e-3


def test_a_hub_row_is_read_in_fan_out_entries_not_whole(monkeypatch):
    """A target with 200,000 in-edges, fan-out 10: 10 entries of ``indices`` are read, and no
    position array of the whole row is built (the random-offset path, not the keyed one)."""
    from gnnzero.data import neighbour_sampling

    class CountingIndices(np.ndarray):
        read = 0

        def __getitem__(self, item):
            out = super().__getitem__(item)
            CountingIndices.read += np.size(out)
            return out

    expanded = []
    real = neighbour_sampling.range_positions
    monkeypatch.setattr(neighbour_sampling, "range_positions",
                        lambda starts, lengths: expanded.append(int(np.sum(lengths)))
                        or real(starts, lengths))
    topology = _shared_sources(1, 200_000)
    topology.indices = np.asarray(topology.indices).view(CountingIndices)
    batch = sample_neighbourhood(topology, np.array([200_000]), [10], np.random.default_rng(0))
    picked = batch.n_id[1:].numpy()
    assert picked.size == np.unique(picked).size == 10 and batch.edge_index.size(1) == 10
    assert CountingIndices.read == 10
    assert sum(expanded) == 0, expanded


def test_directed_multigraph_with_loops_and_isolated_seeds_equals_pyg():
    """Direction, repeated edges, self-loops, a seed without in-edges: fan-out -1 gives PyG's
    nodes and edges (as a multiset); fan-out 0 gives the seeds alone."""
    pytest.importorskip("torch_sparse")
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    edge_index = torch.tensor([[1, 1, 2, 3, 3, 4, 0, 5, 6, 2],
                               [0, 0, 0, 1, 3, 2, 4, 4, 5, 6]])       # 7 -> nothing, 7 isolated
    topology = Topology.from_edge_index(edge_index, 8)
    seeds = torch.tensor([0, 7, 5])
    structure = Data(edge_index=edge_index, num_nodes=8, n_id=torch.arange(8))
    ref = next(iter(NeighborLoader(structure, num_neighbors=[-1, -1], input_nodes=seeds,
                                   batch_size=3)))
    ours = sample_neighbourhood(topology, seeds.numpy(), [-1, -1], np.random.default_rng(0))
    assert torch.equal(ours.n_id[:3], seeds) and set(ours.n_id.tolist()) == set(ref.n_id.tolist())

    def edges(batch):
        return sorted((int(batch.n_id[s]), int(batch.n_id[t]))
                      for s, t in batch.edge_index.t().tolist())

    assert edges(ours) == edges(ref)
    alone = sample_neighbourhood(topology, seeds.numpy(), [0, 0], np.random.default_rng(0))
    assert torch.equal(alone.n_id, seeds) and alone.edge_index.size(1) == 0


def test_each_step_draws_from_its_own_stream(graph):
    """The same seed nodes, sampled with the generators of other epochs, ranks or steps,
    get other neighbours; no generator repeats the shared shuffle stream."""
    from gnnzero.data.sharding import epoch_rng

    opts = LoaderOptions(kind="neighbor", batch_size=64, num_neighbors=[3, 2])
    loaders = [build_loader(graph, opts, rank=r, world_size=2, seed=5) for r in range(2)]
    seeds = np.arange(0, 1200, 17)

    def draw(rng):
        return sample_neighbourhood(graph.topology, seeds, [3, 2], rng).n_id

    first = draw(loaders[0].generator(0, 0))
    for other in (loaders[0].generator(1, 0), loaders[1].generator(0, 0),
                  loaders[0].generator(0, 1)):
        assert not torch.equal(first, draw(other))
    assert loaders[0].generator(0, 0).random() != epoch_rng(5, 0).random()


def test_loader_batches_are_reproducible_resumable_and_prefetchable(graph):
    opts = LoaderOptions(kind="neighbor", batch_size=64, num_neighbors=[3, 2])
    loader = build_loader(graph, opts, rank=1, world_size=2, seed=5)
    assert loader.prefetch_safe
    first = list(loader.epoch(2))
    again = list(build_loader(graph, opts, rank=1, world_size=2, seed=5).epoch(2))
    resumed = list(loader.epoch(2, start=3))
    assert len(resumed) == len(first) - 3
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
    for a, b in zip(first[3:], resumed, strict=True):
        assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
    other = list(loader.epoch(3))
    assert not torch.equal(first[0].n_id[first[0].batch_size:],
                           other[0].n_id[other[0].batch_size:])


def test_on_a_prepared_directory_no_private_edge_list_is_built(graph, tmp_path):
    """The sampler reads the mapped int32 CSR rows of each frontier: the dataset's whole
    int64 ``edge_index`` is never built, and the batches equal the in-memory graph's."""
    out = tmp_path / "prepared"
    assert prepare(str(out), lambda: source_from_dataset(graph, chunk_rows=257))
    mapped = open_prepared(str(out))
    assert isinstance(mapped.topology.indices, np.memmap)
    assert mapped.topology.indices.dtype == np.int32
    opts = LoaderOptions(kind="neighbor", batch_size=100, num_neighbors=[5, 5])
    from_dir = list(build_loader(mapped, opts, seed=1).epoch(0))
    assert "_edge_index" not in mapped.info
    for a, b in zip(build_loader(graph, opts, seed=1).epoch(0), from_dir, strict=True):
        for key in ("n_id", "edge_index", "y", "loss_mask"):
            assert torch.equal(a[key], b[key]), key
        assert torch.equal(a.x.to_dense(), b.x.to_dense())
