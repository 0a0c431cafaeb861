"""Uniform neighbour sampling straight from the (memory-mapped) CSR of a ``Topology``.

The batches are those of PyG's ``NeighborLoader`` (``replace=False``, ``disjoint=False``,
``source_to_target``): the seeds first in ``n_id``, then each hop's new nodes in the order
they are first sampled; every target of a hop gets ``min(fan_out, in_degree)`` distinct
in-neighbours chosen uniformly (all of them with fan-out -1); ``edge_index`` holds local
``(source, target)`` pairs and ``batch_size`` the number of seeds.

Written by hand because PyG's samplers (torch-sparse's ``neighbor_sample``, pyg-lib's)
take an int64 CSC in private memory: on a prepared directory, whose int32 arrays every rank
maps and shares, that is a private copy of twice the edge list per rank.  Here each batch
reads only the rows of its frontier from the mapped arrays, and draws from a numpy
generator of its own (so batches can be built ahead in a background thread).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from .csr import Topology, range_positions


# Targets with up to KEYED_DEGREE x fan_out in-edges: a random key per in-edge, the fan_out
# smallest win.  Above: fan_out random offsets into the target's row, collisions redrawn, so
# a hub's row is never read whole (cost ~ fan_out, not its in-degree).
KEYED_DEGREE = 4


def sample_in_edges(topology: Topology, targets: np.ndarray, fan_out: int,
                    rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """``(position in topology.indices, target position)`` of ``min(fan_out, in_degree)``
    distinct in-edges of each target, drawn uniformly without replacement (every in-edge with
    ``fan_out < 0``, when ``rng`` is not used); grouped by target, in CSR order within a
    target."""
    starts, degree = topology.rows_of(targets)
    if fan_out < 0:
        return range_positions(starts, degree), np.repeat(np.arange(starts.size), degree)
    keyed = np.flatnonzero(degree <= KEYED_DEGREE * fan_out)
    position, target_pos = range_positions(starts[keyed], degree[keyed]), \
        np.repeat(keyed, degree[keyed])
    over = np.flatnonzero(degree[target_pos] > fan_out)       # edges of keyed targets to thin
    if over.size:
        order = over[np.argsort(target_pos[over] + rng.random(over.size), kind="stable")]
        grouped = target_pos[order]
        rank = np.arange(grouped.size) - np.searchsorted(grouped, grouped, side="left")
        keep = np.ones(position.size, dtype=bool)
        keep[order[rank >= fan_out]] = False
        position, target_pos = position[keep], target_pos[keep]
    hubs = np.flatnonzero(degree > KEYED_DEGREE * fan_out)
    if hubs.size:
        offsets = distinct_offsets(degree[hubs], fan_out, rng)
        position = np.concatenate([position, (starts[hubs, None] + offsets).ravel()])
        target_pos = np.concatenate([target_pos, np.repeat(hubs, fan_out)])
        order = np.lexsort((position, target_pos))
        position, target_pos = position[order], target_pos[order]
    return position, target_pos


def distinct_offsets(degree: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[len(degree), count]`` offsets, row ``i`` a uniform ``count``-subset of
    ``range(degree[i])`` (``degree > count``): drawn with replacement, repeats redrawn until
    none is left (the result does not depend on the values' labels, so every subset is
    equally likely)."""
    offsets = (rng.random((degree.size, count)) * degree[:, None]).astype(np.int64)
    while count > 1:
        order = np.argsort(offsets, axis=1, kind="stable")
        ordered = np.take_along_axis(offsets, order, axis=1)
        repeat = np.zeros(offsets.shape, dtype=bool)
        np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
        if not repeat.any():
            break
        rows = np.nonzero(repeat)[0]
        offsets[repeat] = (rng.random(rows.size) * degree[rows]).astype(np.int64)
    return offsets


def sample_neighbourhood(topology: Topology, seeds: np.ndarray, fan_outs: Sequence[int],
                         rng: Optional[np.random.Generator], edge_ids: bool = False) -> Data:
    """The sampled ``len(fan_outs)``-hop neighbourhood of ``seeds`` as a structure-only
    ``Data`` (``edge_index``, ``n_id``, ``num_nodes``, ``batch_size``, and with ``edge_ids``
    ``e_id``: each edge's position in ``topology.indices``): each hop samples the
    in-neighbours of the nodes the previous hop added."""
    nodes = np.asarray(seeds, dtype=np.int64)
    known = _Known(nodes)
    frontier = np.arange(nodes.size, dtype=np.int64)            # local ids of this hop's targets
    edge_src, edge_dst, edge_pos = [], [], []
    for fan_out in fan_outs:
        position, target_pos = sample_in_edges(topology, nodes[frontier], fan_out, rng)
        sources = np.asarray(topology.indices[position], dtype=np.int64)
        edge_pos.append(position)
        hit, local = known.lookup(sources)
        fresh = sources[~hit]
        unique, first = np.unique(fresh, return_index=True)
        by_appearance = np.argsort(first, kind="stable")
        unique_local = np.empty(unique.size, dtype=np.int64)
        unique_local[by_appearance] = nodes.size + np.arange(unique.size)
        local[~hit] = unique_local[np.searchsorted(unique, fresh)]
        edge_src.append(local)
        edge_dst.append(frontier[target_pos])
        frontier = nodes.size + np.arange(unique.size, dtype=np.int64)
        nodes = np.concatenate([nodes, unique[by_appearance]])
        known.add(unique, unique_local)
    edge_index = np.stack([np.concatenate(edge_src), np.concatenate(edge_dst)]) if edge_src \
        else np.empty((2, 0), dtype=np.int64)
    batch = Data(edge_index=torch.from_numpy(edge_index), n_id=torch.from_numpy(nodes),
                 num_nodes=int(nodes.size))
    batch.batch_size = len(seeds)
    if edge_ids:
        batch.e_id = torch.from_numpy(np.concatenate(edge_pos) if edge_pos
                                      else np.empty(0, dtype=np.int64))
    return batch


class _Known:
    """Global node id -> local id of the nodes in the batch so far (sorted arrays)."""

    def __init__(self, nodes: np.ndarray) -> None:
        order = np.argsort(nodes, kind="stable")
        self.ids, self.local = nodes[order], order.astype(np.int64)

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of ``query`` are known, and their local ids (garbage where unknown)."""
        if self.ids.size == 0:
            return np.zeros(query.size, dtype=bool), np.zeros(query.size, dtype=np.int64)
        pos = np.searchsorted(self.ids, query).clip(max=self.ids.size - 1)
        return self.ids[pos] == query, self.local[pos].copy()

    def add(self, ids: np.ndarray, local: np.ndarray) -> None:
        merged, merged_local = np.concatenate([self.ids, ids]), np.concatenate([self.local, local])
        order = np.argsort(merged, kind="stable")
        self.ids, self.local = merged[order], merged_local[order]
