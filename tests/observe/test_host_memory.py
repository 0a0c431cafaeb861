"""Host bytes a dataset and its loader hold."""
from __future__ import annotations


def test_loader_host_bytes_include_the_densified_full_graph(small_synthetic):
    from gnnzero.data import build_loader
    from gnnzero.data.loaders import LoaderOptions
    from gnnzero.observe.host_memory import dataset_and_loader_host_bytes

    loader = build_loader(small_synthetic, LoaderOptions(kind="full"))
    held = dataset_and_loader_host_bytes(small_synthetic, loader)
    dense_x = small_synthetic.num_nodes * small_synthetic.num_features * 4
    assert held["feature_store_bytes"] == small_synthetic.features.nbytes()
    # The full-batch loader keeps a dense copy of every feature row (plus labels and masks).
    assert dense_x <= held["loader_bytes"] <= dense_x + 4 * held["graph_structure_bytes"]
    topology = small_synthetic.topology
    assert held["graph_structure_bytes"] >= topology.indptr.nbytes + topology.indices.nbytes
