"""Node-feature stores implementing PyG's ``FeatureStore`` interface.

PyG loaders (``NeighborLoader`` with a ``(FeatureStore, GraphStore)`` pair) can
consume these directly; our Cluster-GCN / GraphSAINT path gathers each batch's
rows by global node id through the same ``get_tensor`` call.

* ``DenseFeatureStore``: torch tensors in RAM.
* ``SparseFeatureStore``: scipy CSR matrices, memory about ``nnz * (index + value)``
  bytes; a batch's rows stay sparse (``batch_rows``) below a density threshold, else
  only the gathered rows are made dense.
* ``MmapFeatureStore``: ``.npy`` files memory-mapped from disk, read per batch,
  so features may be larger than RAM.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data.feature_store import FeatureStore, TensorAttr

Key = tuple[Optional[str], str]
# Below this density a sparse store's batch rows stay sparse (torch CSR): measured in
# benchmarks/sparse_density.py, where the sparse first layer stops being faster.
SPARSE_BATCH_DENSITY = 0.1


def _key(attr: TensorAttr) -> Key:
    group = attr.group_name if attr.is_set("group_name") else None
    return group, attr.attr_name


def _as_numpy_index(index: Any) -> Any:
    if index is None or isinstance(index, slice):
        return slice(None) if index is None else index
    if isinstance(index, torch.Tensor):
        return index.cpu().numpy()
    return np.asarray(index)


class MatrixFeatureStore(FeatureStore):
    """Shared bookkeeping; subclasses say how a matrix is stored and gathered."""

    def __init__(self) -> None:
        super().__init__()
        self._store: dict[Key, Any] = {}

    # -- to implement ------------------------------------------------------
    def _to_backend(self, key: Key, tensor: Any) -> Any:
        raise NotImplementedError

    def _gather(self, backend: Any, index: Any) -> torch.Tensor:
        raise NotImplementedError

    def _backend_nbytes(self, backend: Any) -> int:
        raise NotImplementedError

    # -- FeatureStore interface ---------------------------------------------
    def _put_tensor(self, tensor: Any, attr: TensorAttr) -> bool:
        key = _key(attr)
        self._store[key] = self._to_backend(key, tensor)
        return True

    def _backend(self, attr: TensorAttr) -> Any:
        key = _key(attr)
        if key not in self._store:   # as PyG's reference store (testing/feature_store.py)
            raise KeyError(f"no tensor '{key[1]}' (group {key[0]}) in this feature store")
        return self._store[key]

    def _get_tensor(self, attr: TensorAttr) -> torch.Tensor:
        backend = self._backend(attr)
        index = attr.index if attr.is_set("index") else None
        return self._gather(backend, _as_numpy_index(index))

    def _remove_tensor(self, attr: TensorAttr) -> bool:
        return self._store.pop(_key(attr), None) is not None

    def _get_tensor_size(self, attr: TensorAttr) -> tuple[int, ...]:
        return tuple(self._backend(attr).shape)

    def get_all_tensor_attrs(self) -> list[TensorAttr]:
        return [TensorAttr(group_name=g, attr_name=a) for g, a in self._store]

    # -- convenience ---------------------------------------------------------
    def rows(self, index: torch.Tensor, attr_name: str = "x",
             group_name: Optional[str] = None) -> torch.Tensor:
        """Dense float rows ``index`` of feature matrix ``attr_name``."""
        return self.get_tensor(group_name=group_name, attr_name=attr_name, index=index)

    def batch_rows(self, index: torch.Tensor, sparse_below: float = 0.0,
                   attr_name: str = "x") -> torch.Tensor:
        """Rows ``index`` for a batch: a torch CSR tensor when the store is sparse and the
        rows' density is below ``sparse_below`` (0 = always dense), else dense float rows."""
        if sparse_below > 0 and hasattr(self, "_gather_csr"):
            rows = self._gather_csr(self._backend(TensorAttr(attr_name=attr_name)),
                                    _as_numpy_index(index))
            if rows.nnz < sparse_below * rows.shape[0] * rows.shape[1]:
                from ..models.sparse_input import csr_tensor

                return csr_tensor(rows)
            return torch.from_numpy(rows.toarray())
        return self.rows(index, attr_name)

    def shape(self, attr_name: str = "x", group_name: Optional[str] = None) -> tuple[int, ...]:
        return self.get_tensor_size(group_name=group_name, attr_name=attr_name)

    def nbytes(self) -> int:
        """Host bytes held by the stored matrices (RAM for dense/sparse, disk for mmap)."""
        return sum(self._backend_nbytes(b) for b in self._store.values())


class DenseFeatureStore(MatrixFeatureStore):
    """Dense float tensors in RAM."""

    def _to_backend(self, key: Key, tensor: Any) -> torch.Tensor:
        if sp.issparse(tensor):
            tensor = tensor.toarray()
        return torch.as_tensor(tensor, dtype=torch.float32)

    def _gather(self, backend: torch.Tensor, index: Any) -> torch.Tensor:
        if isinstance(index, slice):
            return backend[index]
        return backend[torch.from_numpy(np.asarray(index, dtype=np.int64))]

    def _backend_nbytes(self, backend: torch.Tensor) -> int:
        return backend.numel() * backend.element_size()


class SparseFeatureStore(MatrixFeatureStore):
    """CSR matrices; rows are densified only when gathered for a batch."""

    def _to_backend(self, key: Key, tensor: Any) -> sp.csr_matrix:
        if isinstance(tensor, torch.Tensor) and tensor.layout != torch.strided:
            coo = tensor.to_sparse_coo().coalesce()   # never densify a sparse input
            (row, col), val = coo.indices().numpy(), coo.values().numpy()
            tensor = sp.csr_matrix((val, (row, col)), shape=tuple(coo.shape))
        elif isinstance(tensor, torch.Tensor):
            tensor = tensor.numpy()
        matrix = sp.csr_matrix(tensor, dtype=np.float32)
        matrix.sort_indices()
        return matrix

    def _gather(self, backend: sp.csr_matrix, index: Any) -> torch.Tensor:
        return torch.from_numpy(backend[index].toarray())

    def _gather_csr(self, backend: sp.csr_matrix, index: Any) -> sp.csr_matrix:
        return backend[index]

    def _backend_nbytes(self, backend: sp.csr_matrix) -> int:
        return backend.data.nbytes + backend.indices.nbytes + backend.indptr.nbytes


def as_float32(rows: np.ndarray, storage: str) -> torch.Tensor:
    """Rows read from a file of ``storage`` dtype (``bfloat16`` is kept as raw uint16 bits,
    which numpy lacks a type for) as a float32 tensor."""
    if storage == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(rows).view(np.int16)).view(
            torch.bfloat16).float()
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


class MmapFeatureStore(MatrixFeatureStore):
    """Dense ``.npy`` files under ``directory``, memory-mapped read-only.

    Files of a prepared directory are mapped as they are (``map_file``), in float32,
    float16 or bfloat16 storage; rows come out as float32.
    """

    def __init__(self, directory: str, chunk_rows: int = 65_536) -> None:
        super().__init__()
        self.directory = directory
        self.chunk_rows = chunk_rows
        self.storage: dict[Key, str] = {}

    def map_file(self, path: str, storage: str = "float32", attr_name: str = "x",
                 group_name: Optional[str] = None) -> None:
        """Serve ``attr_name`` from the existing ``.npy`` file ``path`` (never copied)."""
        key = (group_name, attr_name)
        self._store[key] = np.load(path, mmap_mode="r")
        self.storage[key] = storage

    def _path(self, key: Key) -> str:
        group, name = key
        return os.path.join(self.directory, f"{group or 'node'}__{name}.npy")

    def _to_backend(self, key: Key, tensor: Any) -> np.memmap:
        if isinstance(tensor, str):  # an existing .npy file: map it as is
            return np.load(tensor, mmap_mode="r")
        num_rows, num_cols = tensor.shape
        blocks = (tensor[start:start + self.chunk_rows]
                  for start in range(0, num_rows, self.chunk_rows))
        return self._write(key, blocks, num_rows, num_cols)

    def _write(self, key: Key, blocks: Iterable[Any], num_rows: int, num_cols: int) -> np.memmap:
        """Stream row blocks into ``<key>.npy``; only one block is ever in RAM."""
        os.makedirs(self.directory, exist_ok=True)
        path = self._path(key)
        tmp = path + ".tmp"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(num_rows, num_cols))
        row = 0
        for block in blocks:
            if sp.issparse(block):
                block = block.toarray()
            elif isinstance(block, torch.Tensor):
                block = block.numpy()
            block = np.asarray(block, dtype=np.float32).reshape(-1, num_cols)
            if row + block.shape[0] > num_rows:
                raise ValueError(f"x chunks hold more than the declared {num_rows} rows")
            out[row:row + block.shape[0]] = block
            row += block.shape[0]
            out.flush()   # write back dirty pages block by block: RSS stays one block
        del out
        if row != num_rows:
            os.unlink(tmp)
            raise ValueError(f"x chunks hold {row} rows but {num_rows} were declared "
                             f"({num_rows - row} missing)")
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r")

    def put_chunks(self, blocks: Iterable[Any], num_rows: int, num_cols: int,
                   attr_name: str = "x", group_name: Optional[str] = None) -> None:
        """Store a matrix given as consecutive row blocks (dense, torch or scipy sparse).

        For features larger than RAM: the blocks may come from a generator that
        reads or computes them one at a time.
        """
        key = (group_name, attr_name)
        self._store[key] = self._write(key, blocks, num_rows, num_cols)

    def _get_tensor(self, attr: TensorAttr) -> torch.Tensor:
        backend = self._backend(attr)
        index = _as_numpy_index(attr.index if attr.is_set("index") else None)
        if not isinstance(index, slice):
            index = np.asarray(index, dtype=np.int64)
            order = np.argsort(index)             # sequential reads are faster
            rows = np.empty((index.size, backend.shape[1]), backend.dtype)
            rows[order] = backend[index[order]]
        else:
            rows = backend[index]
        return as_float32(rows, self.storage.get(_key(attr), "float32"))

    def _backend_nbytes(self, backend: np.memmap) -> int:
        return int(backend.nbytes)


class MappedCSRFeatureStore(MatrixFeatureStore):
    """Sparse CSR features as three mapped ``.npy`` files (``data, indices, indptr``).

    Written by hand rather than wrapping them in a scipy matrix: scipy casts int32
    indices beside an int64 indptr to a common dtype, i.e. copies the whole file.
    """

    def map_files(self, indptr: str, indices: str, data: str, shape: tuple[int, int],
                  storage: str = "float32", attr_name: str = "x") -> None:
        arrays = [np.load(p, mmap_mode="r") for p in (indptr, indices, data)]
        self._store[(None, attr_name)] = _MappedCSR(*arrays, tuple(shape), storage)

    def _gather(self, backend: "_MappedCSR", index: Any) -> torch.Tensor:
        return torch.from_numpy(self._gather_csr(backend, index).toarray())

    def _gather_csr(self, backend: "_MappedCSR", index: Any) -> sp.csr_matrix:
        """Rows ``index`` as a float32 scipy CSR matrix read from the mapped arrays."""
        from .csr import range_positions

        rows = np.arange(backend.shape[0])[index] if isinstance(index, slice) else \
            np.asarray(index, dtype=np.int64)
        starts = np.asarray(backend.indptr[rows])
        lengths = np.asarray(backend.indptr[rows + 1]) - starts
        slots = range_positions(starts, lengths)
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        values = as_float32(backend.data[slots], backend.storage).numpy()
        matrix = sp.csr_matrix((values, np.asarray(backend.indices[slots]), indptr),
                               shape=(rows.size, backend.shape[1]))
        matrix.sum_duplicates()   # duplicate entries add up, as a dense gather would
        return matrix

    def _backend_nbytes(self, backend: "_MappedCSR") -> int:
        return int(backend.indptr.nbytes + backend.indices.nbytes + backend.data.nbytes)


class _MappedCSR:
    def __init__(self, indptr, indices, data, shape, storage) -> None:
        self.indptr, self.indices, self.data = indptr, indices, data
        self.shape, self.storage = shape, storage


FEATURE_STORES = {"dense": DenseFeatureStore, "sparse": SparseFeatureStore,
                  "mmap": MmapFeatureStore}
