"""Feature stores (dense / sparse CSR / mmap) as PyG FeatureStores, categorical embedding, PCA."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnzero.data.categorical import (CategoricalEmbedding, CategoricalEncoder,
                                      one_hot_columns)
from gnnzero.data.feature_store import DenseFeatureStore, MmapFeatureStore, SparseFeatureStore
from gnnzero.data.pca import ChunkedPCA


def _random_graph(n: int, e: int, f: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=gen)
    x = sp.random(n, f, density=0.05, format="csr", dtype=np.float32, random_state=seed)
    return edge_index, x


def _make_store(kind: str, x, tmp_path):
    store = {"dense": DenseFeatureStore, "sparse": SparseFeatureStore}.get(kind)
    store = store() if store else MmapFeatureStore(str(tmp_path / "mmap"), chunk_rows=37)
    store.put_tensor(x, group_name=None, attr_name="x", index=None)
    return store


@pytest.mark.parametrize("kind", ["dense", "sparse", "mmap"])
def test_neighbor_loader_consumes_feature_store_and_local_graph_store(kind, tmp_path):
    pytest.importorskip("torch_sparse")
    from torch_geometric.distributed import LocalGraphStore
    from torch_geometric.loader import NeighborLoader

    n, e = 300, 1500
    edge_index, x = _random_graph(n, e, 40)
    dense = torch.from_numpy(x.toarray())
    store = _make_store(kind, x, tmp_path)
    graph_store = LocalGraphStore.from_data(torch.arange(e), edge_index, n, is_sorted=False)
    loader = NeighborLoader((store, graph_store), num_neighbors=[4, 4],
                            input_nodes=torch.arange(60), batch_size=20)
    edges = set(map(tuple, edge_index.t().tolist()))
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert torch.equal(batch.x, dense[batch.n_id])        # rows gathered by global id
        glob = batch.n_id[batch.edge_index]
        assert all(tuple(p) in edges for p in glob.t().tolist())  # every sampled edge is real


def test_sparse_store_memory_is_nnz_times_index_plus_value():
    n, f = 20_000, 500
    x = sp.random(n, f, density=0.01, format="csr", dtype=np.float32, random_state=1)
    tracemalloc.start()
    store = SparseFeatureStore()
    store.put_tensor(x, group_name=None, attr_name="x", index=None)
    tracemalloc.reset_peak()
    held, _ = tracemalloc.get_traced_memory()
    dense = np.zeros((n, f), np.float32)
    dense_bytes = tracemalloc.get_traced_memory()[0] - held
    tracemalloc.stop()
    del dense
    formula = x.nnz * (4 + 4) + (n + 1) * 4              # float32 value + int32 column index
    assert store.nbytes() == formula
    assert dense_bytes == pytest.approx(n * f * 4, rel=0.01)
    # 1% dense: value + index are 2 x 1% of the dense bytes, plus the row pointer.
    assert store.nbytes() <= dense_bytes * 0.02 * 1.01 + (n + 1) * 4
    rows = torch.tensor([5, 0, 19_999, 5])
    assert torch.equal(store.rows(rows), torch.from_numpy(x[rows.numpy()].toarray()))


def test_sparse_store_takes_torch_sparse_without_densifying():
    dense = torch.zeros(50, 30)
    dense[3, 7], dense[49, 0] = 2.0, -1.0
    store = SparseFeatureStore()
    store.put_tensor(dense.to_sparse(), group_name=None, attr_name="x", index=None)
    assert store.nbytes() == 2 * 8 + 51 * 4
    assert torch.equal(store.rows(torch.arange(50)), dense)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * 4096


def test_mmap_store_streams_chunks_and_reads_rows_without_loading_file(tmp_path):
    rows_total, cols, chunk = 16_384, 1024, 1024            # 64 MiB on disk

    def block(i: int) -> np.ndarray:                         # reference content of row block i
        return (np.arange(chunk * cols, dtype=np.float32).reshape(chunk, cols) % 97) + i

    store = MmapFeatureStore(str(tmp_path / "feat"))
    store.put_chunks((block(i) for i in range(rows_total // chunk)), rows_total, cols)
    assert store.shape("x") == (rows_total, cols)
    path = tmp_path / "feat" / "node__x.npy"
    assert path.stat().st_size >= rows_total * cols * 4
    before = _rss_bytes()
    index = torch.tensor([16_383, 3, 5000, 3, 1024])
    rows = store.rows(index)
    grown = _rss_bytes() - before
    assert grown < 8 * 2**20, f"reading 5 rows grew RSS by {grown / 2**20:.1f} MiB"
    for out, i in zip(rows, index.tolist()):
        assert torch.equal(out, torch.from_numpy(block(i // chunk)[i % chunk]))


def test_mmap_store_rejects_wrong_row_count(tmp_path):
    store = MmapFeatureStore(str(tmp_path / "feat"))
    with pytest.raises(ValueError, match="x chunks hold 4 rows but 6 were declared"):
        store.put_chunks([np.ones((4, 3))], 6, 3)


def test_categorical_embedding_equals_one_hot_times_weight():
    rng = np.random.default_rng(0)
    columns = np.stack([rng.choice(["de", "fr", "us"], 200),
                        rng.integers(0, 1000, 200).astype(str),
                        rng.choice(["a", "b"], 200)], axis=1)
    encoder = CategoricalEncoder().fit(columns[:150])
    ids = encoder.transform(columns)
    widths = [np.unique(columns[:150, j]).size + 1 for j in range(3)]
    assert encoder.num_embeddings == sum(widths)
    # Each column's ids fall in its own block of the shared table.
    starts = np.cumsum([0] + widths)
    for j in range(3):
        assert bool(((ids[:, j] >= starts[j]) & (ids[:, j] < starts[j + 1])).all())
    # Values unseen in the fitted rows map to their column's id 0.
    unseen = ~np.isin(columns[:, 1], columns[:150, 1])
    assert unseen.any() and bool((ids[torch.from_numpy(unseen), 1] == starts[1]).all())
    torch.manual_seed(0)
    module = CategoricalEmbedding.from_encoder(encoder, dim=8)
    one_hot = one_hot_columns(ids, encoder.num_embeddings)
    assert torch.allclose(module(ids), one_hot @ module.bag.weight, atol=1e-6)
    assert ids.numel() * 8 < one_hot.numel() * 4 / 10       # ids are far smaller than one-hot


def _low_rank_data(n: int, f: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(10, 5, k)
    return ((rng.normal(size=(n, k)) * scales) @ np.linalg.qr(rng.normal(size=(f, k)))[0].T
            + 0.01 * rng.normal(size=(n, f)) + rng.normal(size=f)).astype(np.float32)


def test_pca_matches_numpy_svd_projection():
    x = _low_rank_data(1500, 40, 4)
    pca = ChunkedPCA(4, sample_rows=10_000, chunk_rows=128).fit(x)
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:4].T
    ours = pca.transform(x).double().numpy()
    signs = np.sign((ours * reference).sum(axis=0))           # components are defined up to sign
    np.testing.assert_allclose(ours * signs, reference, rtol=1e-3, atol=1e-3)


def test_pca_fitted_on_sample_applied_in_chunks_to_sparse():
    x = sp.csr_matrix(_low_rank_data(3000, 30, 3, seed=1))
    pca = ChunkedPCA(3, sample_rows=600, chunk_rows=250, seed=3).fit(x)
    dense = x.toarray().astype(np.float64)
    _, _, vt = np.linalg.svd(dense - dense.mean(axis=0), full_matrices=False)
    # The sampled subspace equals the full-data one: cosines of principal angles ~ 1.
    cosines = np.linalg.svd(vt[:3] @ pca.components.numpy())[1]
    assert cosines.min() > 0.999
    chunks = list(pca.transform_chunks(x))
    assert [c.shape[0] for c in chunks] == [250] * 12
    expected = (dense - pca.mean.numpy()) @ pca.components.numpy()
    np.testing.assert_allclose(torch.cat(chunks).numpy(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("store_format", ["dense", "sparse", "mmap"])
def test_reduce_features_projects_every_store_like_numpy(store_format, tmp_path):
    from gnnzero.data.datasets import _finish
    from gnnzero.data.pca import reduce_features

    x = _low_rank_data(600, 40, 4, seed=2)
    ring = np.stack([np.arange(600), (np.arange(600) + 1) % 600])
    raw = _finish("lowrank", ring, x, np.arange(600) % 3, {"train": np.ones(600, bool)}, 3,
                  store_format, str(tmp_path))
    reduced = reduce_features(raw, 4, seed=0)
    assert reduced.num_features == 4 and raw.num_features == 40
    assert type(reduced.features).__name__ == ("MmapFeatureStore" if store_format == "mmap"
                                               else "DenseFeatureStore")
    centred = x.astype(np.float64) - x.mean(axis=0)
    reference = centred @ np.linalg.svd(centred, full_matrices=False)[2][:4].T
    ours = reduced.features.rows(torch.arange(600)).double().numpy()
    signs = np.sign((ours * reference).sum(axis=0))           # components are defined up to sign
    np.testing.assert_allclose(ours * signs, reference, rtol=1e-3, atol=1e-3)
    assert reduced.info["pca"] == {"components": 4, "raw_features": 40}
    assert torch.equal(reduced.y, raw.y) and reduced.edge_index is raw.edge_index


def test_reduce_features_names_the_allowed_range():
    from gnnzero.data.datasets import load_synthetic
    from gnnzero.data.pca import reduce_features
    from gnnzero.errors import GnnZeroError

    raw = load_synthetic(300, seed=1)
    with pytest.raises(GnnZeroError, match=rf"--pca-components 100000 is out of range .*"
                                           rf"choose 1\.\.300, or 0"):
        reduce_features(raw, 100_000)
