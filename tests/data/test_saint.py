"""GraphSAINT from the CSR: the induced subgraph vs PyG's ``subgraph``, each sampler's draw
distribution vs its closed form, and the normalisation vs the whole-graph quantities it makes
unbiased estimates of."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch_geometric.utils import subgraph

from gnnzero.data import LoaderOptions, build_loader
from gnnzero.data.csr import Topology
from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset
from gnnzero.data import saint
from gnnzero.data.saint import SaintSampler, estimate_norms, load_norms, out_degree


def _topology(pairs, num_nodes) -> tuple[Topology, torch.Tensor]:
    edge_index = torch.tensor(pairs).t()
    return Topology.from_edge_index(edge_index, num_nodes), edge_index


@pytest.fixture(scope="module")
def multigraph():
    """A random directed multigraph with self-loops and nodes without in- or out-edges."""
    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, 60, 400), rng.integers(0, 55, 400)   # 55..59: no in-edges
    pairs = list(zip(src.tolist(), dst.tolist())) + [(7, 7), (7, 7), (3, 9), (3, 9)]
    pairs = [(s, d) for s, d in pairs if s != 12 and d != 12]      # 12: isolated
    return _topology(pairs, 60)


def test_induced_subgraph_equals_pyg_subgraph(multigraph):
    topology, edge_index = multigraph
    sampler = SaintSampler(topology, "saint-node", batch_size=10)
    rng = np.random.default_rng(0)
    for _ in range(20):
        nodes = np.unique(rng.integers(0, 60, 25))
        local, positions = sampler.subgraph(nodes)
        reference, _ = subgraph(torch.from_numpy(nodes), edge_index, relabel_nodes=True,
                                num_nodes=60)
        assert sorted(map(tuple, local.T.tolist())) == sorted(map(tuple, reference.t().tolist()))
        assert np.array_equal(np.asarray(topology.indices)[positions], nodes[local[0]])


def test_node_sampler_draws_proportional_to_out_degree(multigraph):
    topology, edge_index = multigraph
    sampler = SaintSampler(topology, "saint-node", batch_size=200_000)
    draws = sampler._degree_nodes(np.random.default_rng(1))
    expected = torch.bincount(edge_index[0], minlength=60).numpy()    # PyG: row of a random edge
    observed = np.bincount(draws, minlength=60)
    seen = expected > 0
    assert observed[~seen].sum() == 0
    assert chisquare(observed[seen], expected[seen] / expected.sum() * draws.size).pvalue > 1e-3
    assert np.array_equal(out_degree(topology), expected)


def test_edge_sampler_draws_with_inverse_degree_probability():
    # A star (hub 0 with leaves 1..5) plus the edge 5-6, both directions.
    pairs = [(0, i) for i in range(1, 6)] + [(5, 6)]
    pairs += [(b, a) for a, b in pairs]
    topology, edge_index = _topology(pairs, 7)
    draws = 200_000
    nodes = SaintSampler(topology, "saint-edge", batch_size=draws)._edge_nodes(
        np.random.default_rng(2))
    src, dst = nodes[:draws], nodes[draws:]
    deg = torch.bincount(edge_index[0], minlength=7).double()
    expected = 1 / deg[edge_index[0]] + 1 / deg[edge_index[1]]      # GraphSAINT paper, sec. 3.3
    key = (edge_index[0] * 7 + edge_index[1]).numpy()
    observed = np.bincount(src * 7 + dst, minlength=49)
    assert observed.sum() == observed[key].sum() == draws               # only real edges
    assert chisquare(observed[key], (expected / expected.sum() * draws).numpy()).pvalue > 1e-3


def test_random_walks_step_to_a_uniform_in_edge_or_stay(multigraph):
    topology, edge_index = multigraph
    sampler = SaintSampler(topology, "saint-rw", batch_size=50_000, walk_length=1)
    walks = sampler._walk_nodes(np.random.default_rng(4)).reshape(2, -1)
    start, step = walks
    in_degree = topology.in_degree()
    stays = in_degree[start] == 0
    assert np.array_equal(step[stays], start[stays])                   # 12 and 55..59 stay put
    edges = {}
    for s, d in edge_index.t().tolist():
        edges[(d, s)] = edges.get((d, s), 0) + 1                      # walker at d steps to s
    for node in (7, 9, 20):                        # 7: self-loops; 9: a double edge from 3
        moves = step[start == node]
        sources = [s for (d, s) in edges if d == node]
        multiplicity = np.array([edges[(node, s)] for s in sources], dtype=float)
        observed = np.array([(moves == s).sum() for s in sources])
        assert observed.sum() == moves.size
        if len(sources) > 1:
            assert chisquare(observed, multiplicity / multiplicity.sum() * moves.size).pvalue > 1e-3


def _replayed_samples(sampler: SaintSampler, coverage: int, rng: np.random.Generator):
    """The samples :func:`estimate_norms` draws from ``rng`` (same stopping rule)."""
    covered, samples = 0, []
    while covered < coverage * sampler.topology.num_nodes:
        samples.append(sampler.sample_nodes(rng))
        covered += samples[-1].size
    return samples


@pytest.mark.parametrize("kind", ["saint-rw", "saint-node", "saint-edge"])
def test_normalisation_makes_the_aggregation_and_the_loss_unbiased(multigraph, kind):
    """Over the samples the norms were estimated from, the edge-normalised aggregation at each
    node (averaged over the samples holding it) equals its whole-graph aggregation ``A x``, and
    the node-normalised sum equals the whole-graph mean: the paper's estimators, exactly."""
    topology, edge_index = multigraph
    sampler = SaintSampler(topology, kind, batch_size=8, walk_length=2)
    norms = estimate_norms(sampler, 200, np.random.default_rng(5))
    x = np.random.default_rng(6).normal(size=60)
    full = np.zeros(60)
    np.add.at(full, edge_index[1].numpy(), x[edge_index[0].numpy()])   # A x, messages src->dst
    aggregated, holding, node_sum = np.zeros(60), np.zeros(60), 0.0
    edge_seen = np.zeros(topology.num_edges, dtype=bool)
    samples = _replayed_samples(sampler, 200, np.random.default_rng(5))
    for nodes in samples:
        local, positions = sampler.subgraph(nodes)
        np.add.at(aggregated, nodes[local[1]], norms.edge[positions] * x[nodes[local[0]]])
        holding[nodes] += 1
        edge_seen[positions] = True
        node_sum += float((norms.node[nodes] * x[nodes]).sum())
    seen = holding > 0
    # Nodes each of whose in-edges some sample held (an edge never sampled cannot be estimated).
    missed = np.repeat(np.arange(60), topology.in_degree())[~edge_seen]
    complete = seen & ~np.isin(np.arange(60), missed)
    assert complete.sum() >= 45
    np.testing.assert_allclose(aggregated[complete] / holding[complete], full[complete],
                               rtol=1e-5, atol=1e-5)
    assert node_sum / len(samples) == pytest.approx(x[seen].sum() / 60, rel=1e-5)


def test_norms_are_estimated_once_into_the_folder_and_mapped(multigraph, tmp_path, monkeypatch):
    topology, _ = multigraph
    sampler = SaintSampler(topology, "saint-rw", batch_size=8, walk_length=2)
    first = load_norms(sampler, 10, str(tmp_path))
    second = load_norms(sampler, 10, str(tmp_path))
    assert isinstance(second.edge, np.memmap) and second.edge.shape == (topology.num_edges,)
    np.testing.assert_array_equal(first.node, second.node)
    monkeypatch.setattr(saint, "NORM_CHUNK_EDGES", 7)   # counts -> norms in many chunks
    in_memory = load_norms(sampler, 10, None)           # the same fixed stream, any rank
    np.testing.assert_array_equal(in_memory.edge, second.edge)
    assert (in_memory.edge >= 1).sum() > 0.8 * topology.num_edges   # C_v / C_uv >= 1 if seen
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (folder / "edge.npy").write_bytes((folder / "edge.npy").read_bytes()[:200])
    with pytest.raises(Exception, match="truncated.*delete"):
        load_norms(sampler, 10, str(tmp_path))


@pytest.mark.parametrize("kind", ["saint-rw", "saint-edge"])
def test_on_a_prepared_directory_no_private_edge_list_is_built(graph, tmp_path, kind):
    """From the mapped int32 CSR: the dataset's int64 ``edge_index`` is never built, the norms
    are written once beside the directory's partitions and mapped, and the batches equal the
    in-memory graph's."""
    out = tmp_path / "prepared"
    assert prepare(str(out), lambda: source_from_dataset(graph, chunk_rows=257))
    mapped = open_prepared(str(out))
    opts = LoaderOptions(kind=kind, batch_size=80, sample_coverage=3,
                         cache_dir=str(tmp_path / "cache"))
    loader = build_loader(mapped, opts, seed=1)
    from_dir = list(loader.epoch(0))
    assert "_edge_index" not in mapped.info
    assert isinstance(loader.norms.edge, np.memmap)
    assert str(out) in loader.norms.edge.filename
    in_memory = LoaderOptions(kind=kind, batch_size=80, sample_coverage=3)
    for a, b in zip(build_loader(graph, in_memory, seed=1).epoch(0), from_dir, strict=True):
        for key in ("n_id", "edge_index", "y", "loss_mask", "loss_weight", "edge_weight"):
            assert torch.equal(a[key], b[key]), key
