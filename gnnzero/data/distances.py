"""Hop distances between node pairs, by breadth-first search truncated at a depth and run
from the pairs' sources only, never over all pairs; and pairs matched to a distance.

Hand-written because scipy's ``csgraph`` has no depth-limited BFS: ``dijkstra(limit=...,
indices=...)`` returns a dense ``sources x N`` array, which does not scale; networkx is
pure Python.  The topology is the CSC of :mod:`.csr` (symmetric for an undirected graph).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .csr import Topology

MAX_DEPTH = 4        # distances 2, 3, 4 are exact; beyond is "far" or unreachable
FAR, UNREACHABLE = MAX_DEPTH + 1, -1
BUCKETS = ("2", "3", "4", "≥5", "unreachable")


def bucket_of(distance: np.ndarray) -> np.ndarray:
    """Index into :data:`BUCKETS` of each distance (a distance below 2, only possible with
    parallel edges, counts as 2)."""
    d = np.asarray(distance)
    index = np.clip(d, 2, FAR) - 2
    return np.where(d == UNREACHABLE, len(BUCKETS) - 1, index)


def components(topology: Topology) -> np.ndarray:
    """Connected-component label of every node (scipy; weak components)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = topology.num_nodes
    matrix = sp.csr_matrix((np.ones(topology.num_edges, dtype=np.int8),
                            np.asarray(topology.indices), np.asarray(topology.indptr)),
                           shape=(n, n))
    return connected_components(matrix, directed=True, connection="weak")[1]


class TruncatedBFS:
    """Hop distances from one source up to ``max_depth``; the per-node array is reused and
    reset only where a search touched it, so a search costs the size of its ball."""

    def __init__(self, topology: Topology, max_depth: int = MAX_DEPTH) -> None:
        self.topology, self.max_depth = topology, max_depth
        self.dist = np.full(topology.num_nodes, -1, dtype=np.int16)
        self.reached = np.empty(0, dtype=np.int64)
        self.levels: list[np.ndarray] = []

    def run(self, source: int) -> None:
        self.dist[self.reached] = -1
        frontier = np.array([source], dtype=np.int64)
        self.dist[source] = 0
        self.levels = [frontier]
        for depth in range(1, self.max_depth + 1):
            neighbours, _ = self.topology.sources_of(frontier)
            neighbours = np.unique(neighbours)
            frontier = neighbours[self.dist[neighbours] < 0]
            if not frontier.size:
                break
            self.dist[frontier] = depth
            self.levels.append(frontier)
        self.reached = np.concatenate(self.levels)


def _by_source(pairs: np.ndarray):
    """``(source, positions of its pairs)`` for each distinct source of ``pairs``."""
    order = np.argsort(pairs[0], kind="stable")
    sources, starts = np.unique(pairs[0][order], return_index=True)
    return zip(sources.tolist(), np.split(order, starts[1:]))


def pair_distances(topology: Topology, pairs: np.ndarray,
                   labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Hop distance of each pair ``(u, v)`` of ``pairs`` ``[2, P]`` in ``topology``: exact up to
    :data:`MAX_DEPTH`, else :data:`FAR` (same component) or :data:`UNREACHABLE`."""
    return distances_and_matches(topology, pairs, labels=labels)[0]


def distances_and_matches(topology: Topology, pairs: np.ndarray,
                          exclude: Optional[set[tuple[int, int]]] = None, seed: int = 0,
                          labels: Optional[np.ndarray] = None,
                          tries: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances of ``pairs`` (see :func:`pair_distances`) and, with ``exclude`` (the known
    edges), a distance-matched non-edge for each pair ``(u, v)``: ``(u, w)`` with ``w`` drawn
    at random from the nodes in the same bucket from ``u``.  Returns ``(distances, matched
    [2, Q], their distances)``; ``Q < P`` where a bucket has no candidate for ``u``."""
    labels = components(topology) if labels is None else labels
    rng = np.random.default_rng(seed)
    by_component = np.argsort(labels, kind="stable")
    comp_start = np.searchsorted(labels[by_component], np.arange(labels.max() + 2))
    bfs = TruncatedBFS(topology)
    out = np.empty(pairs.shape[1], dtype=np.int64)
    found: list[tuple[int, int, int]] = []
    for source, group in _by_source(pairs):
        bfs.run(source)
        targets = pairs[1][group]
        d = bfs.dist[targets].astype(np.int64)
        beyond = d < 0
        d[beyond] = np.where(labels[targets[beyond]] == labels[source], FAR, UNREACHABLE)
        out[group] = d
        if exclude is None:
            continue
        span = comp_start[labels[source]], comp_start[labels[source] + 1]
        for dist in d.tolist():
            w = _draw_at(bfs, dist, source, span, by_component, labels, rng, tries, exclude)
            if w is not None:
                found.append((source, w, dist))
    matched = np.array(found, dtype=np.int64).reshape(-1, 3).T
    return out, matched[:2], matched[2]


def _draw_at(bfs: TruncatedBFS, dist: int, source: int, span: tuple[int, int],
             by_component: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
             tries: int, exclude: set[tuple[int, int]]) -> Optional[int]:
    """A random node in the same distance bucket from ``source`` as ``dist``, not forming an
    excluded pair (None after ``tries`` misses or when the bucket is empty)."""
    depth = min(max(dist, 2), MAX_DEPTH) if 0 <= dist <= MAX_DEPTH else None
    if depth is not None and depth >= len(bfs.levels):
        return None
    for _ in range(tries):
        if depth is not None:
            level = bfs.levels[depth]
            w = int(level[rng.integers(level.size)])
        elif dist == FAR:
            w = int(by_component[rng.integers(*span)])
            if bfs.dist[w] >= 0:
                continue
        else:
            w = int(rng.integers(labels.size))
            if labels[w] == labels[source]:
                continue
        if (source, w) not in exclude and (w, source) not in exclude:
            return w
    return None
