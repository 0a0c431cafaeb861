"""Graph topology as compressed arrays grouped by target node, and the slices every
loader and evaluator takes from it.

``indptr[v]:indptr[v + 1]`` indexes the *sources* of the edges into ``v`` in
``indices`` (the CSC of PyG's ``edge_index``, i.e. the direction messages flow).
The arrays may be memory-mapped read-only files shared by every rank on a node;
nothing here copies them whole: each function reads the rows it is asked for.

Hand-written because PyG's subgraph / sampler utilities take an int64
``edge_index`` or ``SparseTensor`` held in private memory, and torch-sparse's
kernels need int64 indices where our files hold int32.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

INT32_MAX = np.iinfo(np.int32).max


def index_dtype(num_nodes: int) -> np.dtype:
    """int32 while node ids fit, else int64 (the storage type of ``indices``)."""
    return np.dtype(np.int32 if num_nodes <= INT32_MAX else np.int64)


def range_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + l) for s, l in zip(starts, lengths))`` without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - np.concatenate(
        ([0], np.cumsum(lengths)[:-1])), lengths)
    return offsets + np.arange(total, dtype=np.int64)


@dataclass
class Topology:
    """``num_nodes`` and the edges into each node as ``(indptr, indices)``."""

    num_nodes: int
    indptr: np.ndarray
    indices: np.ndarray
    _fingerprint: Optional[str] = field(default=None, repr=False)

    @property
    def num_edges(self) -> int:
        return int(self.indptr[-1])

    @classmethod
    def from_edge_index(cls, edge_index: torch.Tensor, num_nodes: int) -> "Topology":
        """Group ``edge_index`` by target (stable: sources keep their order per target)."""
        src, dst = torch.as_tensor(edge_index).numpy()
        order = np.argsort(dst, kind="stable")
        indptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(dst, minlength=num_nodes), out=indptr[1:])
        indices = src[order].astype(index_dtype(num_nodes), copy=False)
        return cls(num_nodes, indptr, indices)

    def in_degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def edge_index(self) -> torch.Tensor:
        """The whole ``[2, E]`` int64 ``edge_index`` (a private copy: small-graph paths only)."""
        dst = np.repeat(np.arange(self.num_nodes, dtype=np.int64), self.in_degree())
        return torch.from_numpy(np.stack([np.asarray(self.indices, dtype=np.int64), dst]))

    def rows_of(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, in-degrees)`` of ``targets``' rows in ``indices``."""
        targets = np.asarray(targets, dtype=np.int64)
        starts = np.asarray(self.indptr[targets], dtype=np.int64)
        return starts, np.asarray(self.indptr[targets + 1], dtype=np.int64) - starts

    def sources_of(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sources, target position)`` of every edge into ``targets`` (any order)."""
        starts, lengths = self.rows_of(targets)
        sources = np.asarray(self.indices[range_positions(starts, lengths)], dtype=np.int64)
        return sources, np.repeat(np.arange(starts.size, dtype=np.int64), lengths)

    def fingerprint(self) -> str:
        """Content hash of the structure (the cache key for partitions), read in chunks."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            digest.update(np.int64(self.num_nodes).tobytes())
            for array in (self.indptr, self.indices):
                hash_array(digest, array)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def hash_array(digest, array: np.ndarray, chunk: int = 1 << 24) -> None:
    """Feed ``array``'s bytes (dtype-tagged) to ``digest`` chunk by chunk (no whole copy)."""
    digest.update(str(array.dtype).encode())
    flat = array.reshape(-1)
    for start in range(0, flat.size, chunk):
        digest.update(np.ascontiguousarray(flat[start:start + chunk]).data)


def induced_subgraph(topology: Topology, nodes: np.ndarray,
                     local_of) -> torch.Tensor:
    """Local ``[2, e]`` edge_index among ``nodes``: edges whose source is in the set.

    ``local_of(sources)`` gives each source's position in ``nodes`` or -1 outside.
    Targets are in ``nodes`` order; each target's sources keep their CSR order.
    """
    sources, target_pos = topology.sources_of(nodes)
    local = local_of(sources)
    keep = local >= 0
    return torch.from_numpy(np.stack([local[keep], target_pos[keep]]))

