"""Host bytes held by the dataset (structure, labels, feature store) and by the loader.

Loaders keep their own arrays (a full-graph ``Data``, GraphSAINT's norms), so their bytes are
found by walking the loader object for tensors, numpy arrays and scipy matrices;
storages already owned by the dataset are not counted twice.  No library
reports the bytes an arbitrary Python object graph holds, hence the walk.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

_WALK_PREFIXES = ("gnnzero.", "torch_geometric.", "torch_sparse.")
_MAX_DEPTH = 8


class _HostBytes:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.visited: set[int] = set()
        self.total = 0

    def _add(self, ptr: int, nbytes: int) -> None:
        if nbytes and ptr not in self.seen:
            self.seen.add(ptr)
            self.total += nbytes

    def walk(self, obj: Any, depth: int = 0) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided:   # a sparse tensor: its values and indices
                from ..models.sparse_input import sparse_parts

                for part in sparse_parts(obj):
                    self.walk(part, depth + 1)
            elif obj.device.type == "cpu":
                storage = obj.untyped_storage()
                self._add(storage.data_ptr(), storage.nbytes())
            return
        if isinstance(obj, np.ndarray):
            base = obj if obj.base is None else obj.base
            if isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
                self._add(base.__array_interface__["data"][0], base.nbytes)
            return
        if sp.issparse(obj):
            for part in ("data", "indices", "indptr", "row", "col"):
                if hasattr(obj, part):
                    self.walk(getattr(obj, part), depth + 1)
            return
        if depth > _MAX_DEPTH or id(obj) in self.visited:
            return
        self.visited.add(id(obj))
        if isinstance(obj, dict):
            for value in obj.values():
                self.walk(value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                self.walk(value, depth + 1)
        elif type(obj).__module__.startswith(_WALK_PREFIXES):
            stores = getattr(obj, "stores", None)   # PyG Data: tensors live in its stores
            if stores is not None and not callable(stores):
                for store in stores:
                    self.walk(dict(store.items()), depth + 1)
            if hasattr(obj, "__dict__"):
                for value in vars(obj).values():
                    self.walk(value, depth + 1)


def dataset_and_loader_host_bytes(dataset: Any, loader: Any) -> dict[str, int]:
    """Host bytes of the dataset (features + structure + labels) and, separately, the loader's own."""
    counter = _HostBytes()
    if getattr(dataset, "is_hetero", False):   # a HeteroData in RAM
        structure, features = dataset.host_parts()
        counter.walk(features)
        feature_store = counter.total
        counter.walk(structure)
        structure = counter.total - feature_store
        counter.walk(loader)
        return {"feature_store_bytes": feature_store, "graph_structure_bytes": structure,
                "loader_bytes": counter.total - feature_store - structure}
    topology = dataset.topology
    # Mapped arrays (a prepared directory) are file pages, not counted; numpy memmaps are
    # skipped by the walk, the tensors over them are left out here.
    counter.walk([topology.indptr, topology.indices] +
                 ([] if dataset.prepared_dir else [dataset.y, dataset.masks]))
    structure = counter.total
    feature_store = int(dataset.features.nbytes())
    counter.walk(dataset.features)   # mark the store's arrays as seen (mmap files are on disk)
    before = counter.total
    counter.walk(loader)
    return {"feature_store_bytes": feature_store, "graph_structure_bytes": structure,
            "loader_bytes": counter.total - before}
