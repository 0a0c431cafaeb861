"""Sparse feature batches from every loader and evaluation path: x stays a torch CSR tensor
below the density threshold, equal to the dense rows; dense above it, with a dense store,
or with the threshold at 0."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gnnzero.data import LoaderOptions, build_loader, load_dataset
from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset
from gnnzero.engine.evaluation import evaluate, evaluate_sampled
from gnnzero.engine.layerwise import layerwise_inference
from gnnzero.models import build_model
from gnnzero.observe.activations import batch_bytes

KINDS = {"full": {}, "cluster": {"num_parts": 8, "clusters_per_batch": 2},
         "saint-rw": {"batch_size": 100, "sample_coverage": 2}, "neighbor": {"batch_size": 200, "num_neighbors": [5, 5]}}


@pytest.fixture(scope="module")
def sparse_graph():
    dataset = load_dataset("synthetic", num_nodes=800, seed=5)   # 500 features, ~1.6 % dense
    assert type(dataset.features).__name__ == "SparseFeatureStore"
    return dataset


def _dense_twin(dataset, **changes):
    return dataclasses.replace(dataset, sparse_batch_density=0.0, **changes)


@pytest.mark.parametrize("kind", KINDS)
def test_every_loader_yields_sparse_x_equal_to_the_dense_rows(sparse_graph, kind, tmp_path):
    opts = LoaderOptions(kind=kind, cache_dir=str(tmp_path), **KINDS[kind])
    dense_rows = sparse_graph.features.rows(torch.arange(sparse_graph.num_nodes))
    torch.manual_seed(0)
    batches = list(build_loader(sparse_graph, opts, seed=1).epoch(0))
    assert batches
    for batch in batches:
        assert batch.x.layout == torch.sparse_csr
        assert batch.x.col_indices().dtype == torch.int32    # int32 while it fits
        assert torch.equal(batch.x.to_dense(), dense_rows[batch.n_id])
        values = int(batch.x.values().numel())
        stored = values * 4 + values * 4 + (batch.num_nodes + 1) * 4
        assert batch_bytes(batch) >= stored
        dense_bytes = batch_bytes(batch) - stored + batch.num_nodes * 500 * 4
        assert dense_bytes > 20 * stored
    torch.manual_seed(0)
    twin = list(build_loader(_dense_twin(sparse_graph), opts, seed=1).epoch(0))
    assert [b.x.layout for b in twin] == [torch.strided] * len(batches)
    for batch, dense in zip(batches, twin):
        assert torch.equal(batch.n_id, dense.n_id)
        assert torch.equal(batch.x.to_dense(), dense.x)


def test_density_threshold_and_dense_store_give_dense_batches(sparse_graph):
    n_id = torch.arange(300)
    density = float((sparse_graph.features.rows(n_id) != 0).float().mean())
    store = sparse_graph.features
    assert store.batch_rows(n_id, sparse_below=density * 1.01).layout == torch.sparse_csr
    assert store.batch_rows(n_id, sparse_below=density * 0.99).layout == torch.strided
    assert store.batch_rows(n_id, sparse_below=0.0).layout == torch.strided
    dense = load_dataset("synthetic", num_nodes=800, seed=5, feature_format="dense")
    assert dense.batch_features(n_id).layout == torch.strided


def test_mapped_csr_store_gathers_sparse_rows(sparse_graph, tmp_path):
    out = tmp_path / "prepared"
    prepare(str(out), lambda: source_from_dataset(sparse_graph), sparse=True)
    mapped = open_prepared(str(out))
    assert type(mapped.features).__name__ == "MappedCSRFeatureStore"
    n_id = torch.tensor([7, 3, 3, 799, 0])
    rows = mapped.batch_features(n_id)
    assert rows.layout == torch.sparse_csr
    assert torch.equal(rows.to_dense(), sparse_graph.features.rows(n_id))


def _model(arch: str, dataset):
    torch.manual_seed(0)
    return build_model(arch, dataset.num_features, 16, dataset.num_classes, 2, dropout=0.0).eval()


@pytest.mark.parametrize("arch", ["gcn", "sage", "gin"])
def test_layerwise_logits_from_sparse_features_equal_dense(sparse_graph, arch, tmp_path):
    model = _model(arch, sparse_graph)
    sparse = layerwise_inference(model, sparse_graph, torch.device("cpu"), batch_size=150,
                                 scratch_dir=str(tmp_path / "a"))
    dense = layerwise_inference(model, _dense_twin(sparse_graph), torch.device("cpu"),
                                batch_size=150, scratch_dir=str(tmp_path / "b"))
    assert torch.equal(sparse.node_ids, dense.node_ids)
    err = (sparse.logits - dense.logits).abs().max() / dense.logits.abs().max()
    assert float(err) < 1e-5


@pytest.mark.parametrize("method", ["full-graph", "clusters"])
def test_whole_graph_and_cluster_evaluation_agree_with_dense(sparse_graph, method, tmp_path):
    model = _model("sage", sparse_graph)
    twin = _dense_twin(sparse_graph)
    got = evaluate(method, model, sparse_graph, torch.device("cpu"), cache_dir=str(tmp_path))
    expected = evaluate(method, model, twin, torch.device("cpu"), cache_dir=str(tmp_path))
    for split in ("train", "val", "test"):
        assert got[split]["correct"] == expected[split]["correct"]


def test_sampled_evaluation_agrees_with_dense(sparse_graph):
    model = _model("gcn", sparse_graph)
    got = evaluate_sampled(model, sparse_graph, 100, torch.device("cpu"), seed=3)
    expected = evaluate_sampled(model, _dense_twin(sparse_graph), 100, torch.device("cpu"),
                                seed=3)
    assert got["correct"] == expected["correct"] and got["total"] == 100
    assert np.isclose(got["accuracy"], expected["accuracy"])
