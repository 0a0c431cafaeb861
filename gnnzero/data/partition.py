"""METIS partitions for Cluster-GCN (through ``pymetis``), stored as arrays beside the graph.

PyG's ``ClusterData`` asks for pyg-lib or a METIS-enabled torch-sparse (neither
installs here) and keeps a permuted private copy of the whole graph.  Instead a
partition is four arrays written once per graph and part count, then mapped
read-only by every rank:

* ``part.npy``: node -> part;  ``nodes.npy``: the nodes ordered by part
  (``offsets.npy`` delimits each part);  ``position.npy``: each node's place
  inside its part.

A Cluster-GCN batch is then sliced from the graph's CSR (:meth:`Partition.batch`):
the batch's nodes in part order and the edges among them, which is the subgraph
PyG's ``ClusterLoader`` builds.  The arrays live in ``<folder>/metis_<P>/`` with a
``meta.json`` naming the graph fingerprint they were computed for; the folder is
the prepared directory's ``parts/`` or ``<cache-dir>/<fingerprint>/``.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from ..errors import GnnZeroError
from ..utils.once import build_once
from .csr import INT32_MAX, Topology, index_dtype, induced_subgraph
from .validate import validate_num_parts

PART_FILES = ("part", "nodes", "offsets", "position")


def symmetric_csr(topology: Topology) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` int64 of the symmetrised graph without self-loops (METIS input)."""
    n = topology.num_nodes
    ones = np.ones(topology.num_edges, dtype=np.int8)
    # int32 index arrays while they fit: scipy would upcast a mixed pair to int64 copies.
    small = 2 * topology.num_edges < INT32_MAX
    index = np.int32 if small else np.int64
    adj = sp.csr_matrix((ones, np.asarray(topology.indices, dtype=index),
                         np.asarray(topology.indptr, dtype=index)), shape=(n, n))
    del ones
    adj.data[:] = 1                       # duplicates summed: back to a pattern
    adj = (adj + adj.T.tocsr()).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    indptr, indices = adj.indptr, adj.indices
    del adj
    return indptr.astype(np.int64), indices.astype(np.int64)


def metis_parts(topology: Topology, num_parts: int, niter: Optional[int] = None) -> np.ndarray:
    """Node -> part assignment from METIS (k-way) on the symmetrised graph.

    ``niter``: METIS refinement iterations per level (METIS default 10); 1 about
    halves the time on large graphs for a ~2% larger edge cut.
    """
    import pymetis

    validate_num_parts(num_parts, topology.num_nodes)
    if num_parts == 1:
        return np.zeros(topology.num_nodes, dtype=np.int32)
    indptr, indices = symmetric_csr(topology)
    # pymetis' idx_t is 64-bit: int64 arrays are passed through without a copy.
    options = pymetis.Options(niter=niter) if niter else None
    result = pymetis.part_graph(num_parts, pymetis.CSRAdjacency(indptr, indices), options=options)
    del indptr, indices
    return np.asarray(result.vertex_part, dtype=np.int32)


def write_partition(folder: str, part: np.ndarray, num_parts: int, fingerprint: str) -> None:
    """The four partition arrays and ``meta.json`` of ``part`` into ``folder``."""
    nodes = np.argsort(part, kind="stable").astype(index_dtype(part.size))
    offsets = np.zeros(num_parts + 1, dtype=np.int64)
    np.cumsum(np.bincount(part, minlength=num_parts), out=offsets[1:])
    position = np.empty(part.size, dtype=index_dtype(part.size))
    position[nodes] = np.arange(part.size) - np.repeat(offsets[:-1], np.diff(offsets))
    for name, array in zip(PART_FILES, (part, nodes, offsets, position)):
        np.save(os.path.join(folder, f"{name}.npy"), array)
    with open(os.path.join(folder, "meta.json"), "w") as handle:
        json.dump({"num_parts": num_parts, "fingerprint": fingerprint}, handle)


@dataclass
class Partition:
    """A METIS partition of one graph, its arrays mapped read-only."""

    num_parts: int
    part: np.ndarray
    nodes: np.ndarray
    offsets: np.ndarray
    position: np.ndarray
    from_cache: bool = True

    def __len__(self) -> int:
        return self.num_parts

    def nodes_of(self, parts) -> np.ndarray:
        """Global ids of the nodes of ``parts``, part by part (int64)."""
        return np.concatenate([np.asarray(self.nodes[self.offsets[p]:self.offsets[p + 1]],
                                          dtype=np.int64) for p in parts])

    def batch(self, topology: Topology, parts) -> Data:
        """The subgraph induced by ``parts``: ``edge_index``, ``n_id`` (global ids), sizes."""
        parts = np.asarray(parts, dtype=np.int64)
        nodes = self.nodes_of(parts)
        base = np.full(self.num_parts, -1, dtype=np.int64)
        sizes = self.offsets[parts + 1] - self.offsets[parts]
        base[parts] = np.concatenate(([0], np.cumsum(sizes)[:-1]))

        def local_of(sources: np.ndarray) -> np.ndarray:
            start = base[np.asarray(self.part[sources], dtype=np.int64)]
            return np.where(start >= 0, start + self.position[sources], -1)

        edge_index = induced_subgraph(topology, nodes, local_of)
        return Data(edge_index=edge_index, n_id=torch.from_numpy(nodes), num_nodes=nodes.size)


def _open(folder: str, fingerprint: str, from_cache: bool) -> Partition:
    meta_path = os.path.join(folder, "meta.json")
    with open(meta_path) as handle:
        meta = json.load(handle)
    if meta.get("fingerprint") != fingerprint:
        raise GnnZeroError(f"{meta_path} was computed for graph {meta.get('fingerprint')} but "
                           f"this graph is {fingerprint}; delete {folder} to partition again")
    arrays = {}
    for name in PART_FILES:
        path = os.path.join(folder, f"{name}.npy")
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise GnnZeroError(f"{path} is unreadable or truncated ({exc}); delete {folder} "
                               f"to partition again") from exc
    return Partition(int(meta["num_parts"]), from_cache=from_cache, **arrays)


def partitions_folder(dataset, cache_dir: Optional[str]) -> Optional[str]:
    """Where ``dataset``'s partitions live: its prepared directory's ``parts/`` (when it
    has them or may write them), else ``<cache_dir>/<fingerprint>``; None without either."""
    prepared = dataset.info.get("partitions_dir")
    if prepared and (os.path.isdir(prepared) or os.access(os.path.dirname(prepared), os.W_OK)):
        if os.path.isdir(prepared) and not os.access(prepared, os.W_OK) and cache_dir:
            return os.path.join(cache_dir, dataset.fingerprint())  # read-only share
        return prepared
    return os.path.join(cache_dir, dataset.fingerprint()) if cache_dir else None


def load_partition(topology: Topology, num_parts: int, folder: str,
                   niter: Optional[int] = None) -> Partition:
    """The ``num_parts`` METIS partition from ``folder``, computed there first if absent.

    One process builds it (others on the same file system wait, without a
    collective timeout); a killed build leaves nothing that looks complete.
    """
    validate_num_parts(num_parts, topology.num_nodes)
    target = os.path.join(folder, f"metis_{num_parts}")
    if os.path.isdir(target) and not os.access(folder, os.W_OK):
        return _open(target, topology.fingerprint(), from_cache=True)
    fingerprint = topology.fingerprint()

    def build(tmp: str) -> None:
        print(f"Computing METIS partitioning ({num_parts} parts, {topology.num_nodes} nodes)...",
              file=sys.stderr, flush=True)
        write_partition(tmp, metis_parts(topology, num_parts, niter), num_parts, fingerprint)

    built = build_once(target, build, f"METIS partitioning into {num_parts} parts")
    return _open(target, fingerprint, from_cache=not built)
