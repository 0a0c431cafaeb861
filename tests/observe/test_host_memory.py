"""Host bytes a dataset and its loader hold."""
from __future__ import annotations

import torch


def test_loader_host_bytes_include_the_full_graph_batch(small_synthetic):
    import dataclasses

    from gnnzero.data import build_loader
    from gnnzero.data.loaders import LoaderOptions
    from gnnzero.observe.host_memory import dataset_and_loader_host_bytes

    n, f = small_synthetic.num_nodes, small_synthetic.num_features
    # Sparse batches: the full-batch loader keeps the features as CSR (float32 values,
    # int32 column indices and row pointers) plus labels and masks.
    loader = build_loader(small_synthetic, LoaderOptions(kind="full"))
    held = dataset_and_loader_host_bytes(small_synthetic, loader)
    nnz = small_synthetic.features.rows(torch.arange(n)).count_nonzero().item()
    csr = nnz * 8 + (n + 1) * 4
    assert held["feature_store_bytes"] == small_synthetic.features.nbytes()
    assert csr <= held["loader_bytes"] <= csr + 4 * held["graph_structure_bytes"]
    # Dense batches (--sparse-batch-density 0): a dense copy of every feature row.
    dense = dataclasses.replace(small_synthetic, sparse_batch_density=0.0)
    held = dataset_and_loader_host_bytes(dense, build_loader(dense, LoaderOptions(kind="full")))
    dense_x = n * f * 4
    assert dense_x <= held["loader_bytes"] <= dense_x + 4 * held["graph_structure_bytes"]
    topology = small_synthetic.topology
    assert held["graph_structure_bytes"] >= topology.indptr.nbytes + topology.indices.nbytes
