"""Feature stores (dense / sparse CSR / mmap) as PyG FeatureStores: rows by global id, memory."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnzero.data.feature_store import DenseFeatureStore, MmapFeatureStore, SparseFeatureStore


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


@pytest.mark.parametrize("kind", ["dense", "sparse", "mmap", "mapped-csr"])
def test_reading_a_tensor_that_is_not_stored_raises_key_error_like_pygs_reference(kind, tmp_path):
    from torch_geometric.testing import MyFeatureStore

    from gnnzero.data.feature_store import MappedCSRFeatureStore

    reference = MyFeatureStore()
    with pytest.raises(KeyError):
        reference.get_tensor(group_name=None, attr_name="missing", index=None)
    _, x = _random_graph(50, 10, 8)
    if kind == "mapped-csr":
        x = sp.csr_matrix(x)
        paths = []
        for name in ("indptr", "indices", "data"):
            paths.append(str(tmp_path / f"{name}.npy"))
            np.save(paths[-1], getattr(x, name))
        store = MappedCSRFeatureStore()
        store.map_files(*paths, shape=x.shape)
        assert torch.equal(store.rows(torch.tensor([3, 0, 49])),
                           torch.from_numpy(x[[3, 0, 49]].toarray()))
    else:
        store = _make_store(kind, x, tmp_path)
    with pytest.raises(KeyError):
        store.get_tensor(group_name=None, attr_name="missing", index=None)
    with pytest.raises(KeyError):
        store.get_tensor_size(group_name=None, attr_name="missing")
