"""METIS partitioning (pymetis): balanced parts, fewer cut edges than chance, built once into a
folder, and Cluster-GCN batches sliced from the CSR equal to PyG's ``ClusterLoader``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.loader import ClusterData, ClusterLoader

from gnnzero.data import partition as partition_mod
from gnnzero.data.partition import load_partition
from gnnzero.errors import GnnZeroError


def test_metis_partition_is_built_once_and_second_load_skips_metis(graph, tmp_path, monkeypatch):
    first = load_partition(graph.topology, 12, str(tmp_path))
    assert not first.from_cache and (tmp_path / "metis_12" / "meta.json").exists()
    assert not list(tmp_path.glob("metis_12.tmp-*"))           # the build folder was renamed

    def no_metis(*args, **kwargs):
        raise AssertionError("METIS ran although the partition was cached")

    monkeypatch.setattr(partition_mod, "metis_parts", no_metis)
    second = load_partition(graph.topology, 12, str(tmp_path))
    assert second.from_cache and np.array_equal(first.part, second.part)
    # Another num_parts is another entry: METIS must run (and here, fail), leaving nothing.
    with pytest.raises(AssertionError, match="METIS ran"):
        load_partition(graph.topology, 6, str(tmp_path))
    assert not (tmp_path / "metis_6").exists() and not list(tmp_path.glob("metis_6.tmp-*"))


def test_partition_of_another_graph_is_refused(graph, tmp_path):
    load_partition(graph.topology, 4, str(tmp_path))
    meta = tmp_path / "metis_4" / "meta.json"
    meta.write_text(meta.read_text().replace(graph.fingerprint(), "0123456789abcdef"))
    with pytest.raises(GnnZeroError, match=r"meta.json was computed for graph 0123456789abcdef.*"
                                           r"delete .*metis_4"):
        load_partition(graph.topology, 4, str(tmp_path))


def test_metis_parts_are_balanced_and_cut_fewer_edges_than_random(graph):
    parts = torch.from_numpy(partition_mod.metis_parts(graph.topology, 8).astype(np.int64))
    sizes = torch.bincount(parts, minlength=8)
    assert sizes.sum() == graph.num_nodes and sizes.max() <= 1.1 * graph.num_nodes / 8
    row, col = graph.edge_index
    cut = float((parts[row] != parts[col]).float().mean())
    assert cut < 0.5 * (1 - 1 / 8)         # a random 8-way split cuts 7/8 of the edges


class _GivenParts(ClusterData):
    """PyG's ClusterData with our METIS assignment (PyG's own METIS needs pyg-lib)."""

    def __init__(self, data, parts: np.ndarray) -> None:
        self._parts = torch.from_numpy(np.asarray(parts, dtype=np.int64))
        super().__init__(data, int(self._parts.max()) + 1, log=False)

    def _metis(self, edge_index, num_nodes):
        return self._parts


def test_csr_cluster_batches_equal_pygs_cluster_loader(graph, tmp_path):
    ours = load_partition(graph.topology, 10, str(tmp_path))
    reference = _GivenParts(graph.structure(), ours.part)
    groups = [[0, 3, 7], [1], [9, 2, 5, 4]]
    for group, ref in zip(groups, ClusterLoader(reference, batch_sampler=groups)):
        batch = ours.batch(graph.topology, group)
        # Same nodes (PyG orders a part's nodes by an unstable sort) and the same edges,
        # compared by global id.
        assert torch.equal(batch.n_id.sort().values, ref.n_id.sort().values)
        mine = {tuple(e) for e in batch.n_id[batch.edge_index].t().tolist()}
        assert mine == {tuple(e) for e in ref.n_id[ref.edge_index].t().tolist()}
        assert batch.edge_index.size(1) == ref.edge_index.size(1) > 0
