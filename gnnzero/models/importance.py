"""PinSAGE neighbourhoods: random-walk visit counts, top-k per node (Ying et al., 2018).

PinSAGE defines the neighbourhood of ``v`` as the ``k`` nodes most often visited
by short random walks started at ``v`` and weights them by visit count.  PyG's
walker lives in ``torch_cluster`` (not installable here) and returns walks, not
counts, so the walks and the per-node top-k run here, vectorised over all walks
with numpy on a scipy CSR matrix.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def in_neighbour_csr(edge_index: Tensor, num_nodes: int) -> sp.csr_matrix:
    """CSR whose row ``v`` lists the sources of edges into ``v`` (PyG's message direction)."""
    src, dst = edge_index.detach().cpu().numpy()
    ones = np.ones(src.size, dtype=np.float32)
    csr = sp.csr_matrix((ones, (dst, src)), shape=(num_nodes, num_nodes))
    csr.sum_duplicates()
    return csr


def random_walk_visit_counts(indptr: np.ndarray, indices: np.ndarray, num_walks: int,
                             walk_length: int, seed: int = 0,
                             starts: Optional[np.ndarray] = None) -> sp.csr_matrix:
    """Visit counts ``C[v, u]``: how often ``num_walks`` walks of ``walk_length`` hops from ``v`` hit ``u``.

    Each hop moves to a uniformly chosen neighbour in the CSR (``indptr``, ``indices``);
    a walk that reaches a node without neighbours stops.  Returns to ``v`` itself are
    not counted.  ``E[C[v, u]] = num_walks * sum_{t=1..L} (P^t)[v, u]`` with ``P`` the
    row-normalised adjacency.
    """
    num_nodes = indptr.size - 1
    starts = np.arange(num_nodes) if starts is None else np.asarray(starts)
    rng = np.random.default_rng(seed)
    origin = np.repeat(starts.astype(np.int64), num_walks)
    current = origin.copy()
    alive = np.ones(origin.size, dtype=bool)
    rows, cols = [], []
    for _ in range(walk_length):
        degree = indptr[current + 1] - indptr[current]
        alive &= degree > 0
        step = (rng.random(origin.size) * degree).astype(np.int64)
        moved = indices[np.where(alive, indptr[current] + step, 0)] if indices.size else current
        current = np.where(alive, moved, current)
        counted = alive & (current != origin)
        rows.append(origin[counted])
        cols.append(current[counted])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    counts = sp.coo_matrix((np.ones(rows_all.size, dtype=np.float64), (rows_all, cols_all)),
                           shape=(num_nodes, num_nodes)).tocsr()
    counts.sum_duplicates()
    return counts


def top_k_per_row(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, col, value)`` of each row's ``k`` largest entries (ties: smaller column first)."""
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, -coo.data, coo.row))
    row, col, val = coo.row[order], coo.col[order], coo.data[order]
    first = np.searchsorted(row, row, side="left")
    keep = (np.arange(row.size) - first) < k
    return row[keep].astype(np.int64), col[keep].astype(np.int64), val[keep]


def pinsage_neighbourhood(edge_index: Tensor, num_nodes: int, num_walks: int = 20,
                          walk_length: int = 3, top_k: int = 10,
                          seed: int = 0) -> tuple[Tensor, Tensor]:
    """PinSAGE's importance graph: edges ``u -> v`` for ``v``'s top-``k`` visited ``u``.

    Returns ``(edge_index, edge_weight)`` with weight = visit count / (sum of ``v``'s
    top-k counts), so each node's importance weights sum to one.
    """
    for name, value in (("num_walks", num_walks), ("walk_length", walk_length), ("top_k", top_k)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    csr = in_neighbour_csr(edge_index, num_nodes)
    counts = random_walk_visit_counts(csr.indptr.astype(np.int64), csr.indices.astype(np.int64),
                                      num_walks, walk_length, seed)
    dst, src, count = top_k_per_row(counts, top_k)
    totals = np.bincount(dst, weights=count, minlength=num_nodes)
    weight = count / totals[dst]
    new_index = torch.from_numpy(np.stack([src, dst])).to(edge_index.device)
    return new_index, torch.from_numpy(weight).float().to(edge_index.device)
