"""METIS partitioning (pymetis): balanced parts, fewer cut edges than chance, cached on disk."""
from __future__ import annotations

import pytest
import torch

from gnnzero.data import partition as partition_mod
from gnnzero.data.partition import PyMetisClusterData


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
