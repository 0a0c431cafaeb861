"""GraphSAINT samplers (node, edge, random walk) straight from the (memory-mapped) CSR.

The batches are those of PyG's ``GraphSAINT*Sampler``: the sampled nodes (sorted, unique),
the subgraph they induce, and the normalisation of Zeng et al. 2020 estimated from
``sample_coverage`` samples per node: ``node_norm_v = samples / (C_v N)`` and
``edge_norm_{u->v} = C_v / C_{uv}`` (``C``: how often a node or edge was sampled).

Written by hand because PyG's samplers hold the whole graph as an int64 ``SparseTensor``
(torch-sparse) in every rank's private memory, and PyG's edge sampler races over a dense
``[budget, num_edges]`` random matrix.  Here a sample reads only its nodes' rows from the
shared arrays, and draws from a numpy generator of its own (so batches can be built ahead
in a background thread).  On purpose, where this differs from PyG:

* Walks follow in-edges (towards the nodes whose messages reach the walker); on a symmetric
  graph these are PyG's walks, which follow out-edges.  A node without in-edges stays put,
  as in torch-cluster.
* The edge sampler draws ``P(u->v) ∝ 1/deg_out(u) + 1/deg_in(v)``, the paper's probability
  (sec. 3.3; PyG inverts the degrees twice), with replacement, by rejection from uniform
  edges: memory ``O(N)``, not ``O(E)``.
* ``edge_norm`` divides by the count of the aggregating node ``v`` (the paper's
  ``alpha_{u,v} = p_{u,v} / p_v``, which makes each node's aggregation unbiased); PyG's
  ``_compute_norm`` divides by the source's count.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch_geometric.data import Data

from ..errors import GnnZeroError
from ..utils.once import build_once
from .csr import Topology, range_positions

SAINT_KINDS = ("saint-rw", "saint-node", "saint-edge")
NORM_STREAM = 0x5341   # the tag of the generator the normalisation samples are drawn from
EDGE_NORM_MAX = 1e4    # PyG's clamp of edge_norm
UNSEEN = 0.1           # PyG's stand-in count for a node or edge no sample covered
NORM_CHUNK_EDGES = 1 << 20  # edges turned from counts into norms at a time


def out_degree(topology: Topology, chunk: int = 1 << 24) -> np.ndarray:
    """Out-degree of every node, counted over ``indices`` a chunk at a time."""
    degree = np.zeros(topology.num_nodes, dtype=np.int64)
    for start in range(0, topology.num_edges, chunk):
        part = np.asarray(topology.indices[start:start + chunk])
        degree += np.bincount(part, minlength=topology.num_nodes)
    return degree


@dataclass
class SaintSampler:
    """Draws GraphSAINT node sets of one kind from ``topology``."""

    topology: Topology
    kind: str
    batch_size: int
    walk_length: int = 2

    def __post_init__(self) -> None:
        if self.kind not in SAINT_KINDS:
            raise ValueError(f"unknown GraphSAINT sampler {self.kind!r}")
        self._out_degree: Optional[np.ndarray] = None
        self._member = np.zeros(self.topology.num_nodes, dtype=bool)   # N bytes, reused
        self._lock = threading.Lock()

    @property
    def nodes_per_sample(self) -> int:
        """Nodes one sample draws before duplicates are removed."""
        return self.batch_size * {"saint-rw": self.walk_length + 1, "saint-edge": 2,
                                  "saint-node": 1}[self.kind]

    def sample_nodes(self, rng: np.random.Generator) -> np.ndarray:
        """One sample's nodes, sorted and unique (int64)."""
        draw = {"saint-rw": self._walk_nodes, "saint-node": self._degree_nodes,
                "saint-edge": self._edge_nodes}[self.kind]
        return np.unique(draw(rng))

    def _degree_nodes(self, rng: np.random.Generator) -> np.ndarray:
        # PyG: the source of a uniformly drawn edge, i.e. P(u) ∝ out-degree(u).
        positions = rng.integers(0, self.topology.num_edges, self.batch_size)
        return np.asarray(self.topology.indices[np.sort(positions)], dtype=np.int64)

    def _walk_nodes(self, rng: np.random.Generator) -> np.ndarray:
        current = rng.integers(0, self.topology.num_nodes, self.batch_size)
        visited = [current]
        for _ in range(self.walk_length):
            starts, degree = self.topology.rows_of(current)
            step = current.copy()
            moves = np.flatnonzero(degree)
            offset = (rng.random(moves.size) * degree[moves]).astype(np.int64)
            step[moves] = self.topology.indices[starts[moves] + offset]
            current = step
            visited.append(current)
        return np.concatenate(visited)

    def _edge_nodes(self, rng: np.random.Generator) -> np.ndarray:
        if self._out_degree is None:
            self._out_degree, self._in_degree = out_degree(self.topology), self.topology.in_degree()
        out_deg, in_deg, edges = self._out_degree, self._in_degree, self.topology.num_edges
        if edges == 0:
            return np.empty(0, dtype=np.int64)
        # Acceptance (1/deg_out(u) + 1/deg_in(v)) / 2 <= 1 of a uniform edge; its mean is
        # (nodes with out-edges + nodes with in-edges) / (2 E).
        rate = (np.count_nonzero(out_deg) + np.count_nonzero(in_deg)) / (2 * edges)
        sources, targets, need = [], [], self.batch_size
        while need > 0:
            # Kept in draw order: the first ``need`` accepted must not favour low positions.
            positions = rng.integers(0, edges, int(need / rate * 1.2) + 16)
            u = np.asarray(self.topology.indices[positions], dtype=np.int64)
            v = np.searchsorted(self.topology.indptr, positions, side="right") - 1
            accept = rng.random(positions.size) * 2 < 1 / out_deg[u] + 1 / in_deg[v]
            u, v = u[accept][:need], v[accept][:need]
            sources.append(u)
            targets.append(v)
            need -= u.size
        return np.concatenate(sources + targets)

    def subgraph(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local ``[2, e]`` edges induced by sorted ``nodes``, and their positions in the CSR."""
        starts, degree = self.topology.rows_of(nodes)
        positions = range_positions(starts, degree)
        sources = np.asarray(self.topology.indices[positions], dtype=np.int64)
        with self._lock:       # membership first: most in-edges of a sample leave it
            self._member[nodes] = True
            inside = self._member[sources]
            self._member[nodes] = False
        targets = np.repeat(np.arange(nodes.size, dtype=np.int64), degree)[inside]
        local = np.searchsorted(nodes, sources[inside])
        return np.stack([local, targets]), positions[inside]

    def batch(self, rng: np.random.Generator, norms: Optional["SaintNorms"]) -> Data:
        """One sample as a structure-only ``Data``: ``edge_index``, ``n_id``, ``num_nodes``
        and, with ``norms``, ``node_norm`` and ``edge_norm``."""
        nodes = self.sample_nodes(rng)
        edge_index, positions = self.subgraph(nodes)
        batch = Data(edge_index=torch.from_numpy(edge_index), n_id=torch.from_numpy(nodes),
                     num_nodes=int(nodes.size))
        if norms is not None:
            batch.node_norm = torch.from_numpy(np.asarray(norms.node[nodes], dtype=np.float32))
            batch.edge_norm = torch.from_numpy(np.asarray(norms.edge[positions], np.float32))
        return batch


@dataclass
class SaintNorms:
    """``node`` ``[N]`` and ``edge`` ``[E]`` (in CSR order) float32 normalisation."""

    node: np.ndarray
    edge: np.ndarray


def estimate_norms(sampler: SaintSampler, coverage: int, rng: np.random.Generator,
                   edge_out: Optional[np.ndarray] = None) -> SaintNorms:
    """The normalisation from samples drawn until ``coverage x N`` nodes have been sampled.

    With ``edge_out`` (e.g. a mapped file) the edges' counts and then their norms are
    computed in it, a bounded chunk at a time: no ``E``-sized array in private memory.
    """
    topology = sampler.topology
    node_count = np.zeros(topology.num_nodes, dtype=np.int64)
    edge = np.zeros(topology.num_edges, dtype=np.float32) if edge_out is None else edge_out
    edge[:] = 0                             # float32 counts: exact up to 2**24 samples
    samples = covered = 0
    while covered < coverage * topology.num_nodes:
        nodes = sampler.sample_nodes(rng)
        _, positions = sampler.subgraph(nodes)
        node_count[nodes] += 1              # nodes and positions are unique within a sample
        edge[positions] += 1
        samples += 1
        covered += nodes.size
    indptr = topology.indptr
    cuts = np.unique(np.concatenate([np.searchsorted(indptr, np.arange(0, topology.num_edges,
                                                                       NORM_CHUNK_EDGES)),
                                     [topology.num_nodes]]))
    for a, b in zip(cuts[:-1], cuts[1:]):   # C_v / C_uv over about NORM_CHUNK_EDGES edges
        lo, hi = int(indptr[a]), int(indptr[b])
        seen = edge[lo:hi]
        target_count = np.repeat(node_count[a:b].astype(np.float32),
                                 np.diff(np.asarray(indptr[a:b + 1])))
        unseen = seen == 0
        np.divide(target_count, seen, out=seen, where=~unseen)
        np.minimum(seen, EDGE_NORM_MAX, out=seen)
        seen[unseen] = UNSEEN
    node = samples / np.where(node_count > 0, node_count, UNSEEN) / topology.num_nodes
    return SaintNorms(node.astype(np.float32), edge)


def load_norms(sampler: SaintSampler, coverage: int, folder: Optional[str]) -> SaintNorms:
    """The normalisation, from ``folder`` when it was estimated there before (computed there
    first if absent, by one process, the others waiting), else in memory.  The samples come
    from a fixed stream, so every rank and every run of the same settings gets the same norms."""
    rng = lambda: np.random.default_rng([NORM_STREAM, coverage])  # noqa: E731
    if folder is None:
        return estimate_norms(sampler, coverage, rng())
    walk = f"_w{sampler.walk_length}" if sampler.kind == "saint-rw" else ""
    target = os.path.join(folder, f"{sampler.kind}_b{sampler.batch_size}{walk}_c{coverage}_norm")

    def build(tmp: str) -> None:
        print(f"Estimating GraphSAINT normalisation ({sampler.kind}, {coverage} samples a "
              f"node)...", file=sys.stderr, flush=True)
        # The E-sized edge norms go straight into their file: file pages, not private memory.
        edge = np.lib.format.open_memmap(os.path.join(tmp, "edge.npy"), mode="w+",
                                         dtype=np.float32, shape=(sampler.topology.num_edges,))
        norms = estimate_norms(sampler, coverage, rng(), edge_out=edge)
        edge.flush()
        del edge
        np.save(os.path.join(tmp, "node.npy"), norms.node)

    build_once(target, build, "the GraphSAINT normalisation")
    arrays = []
    for name, size in (("node", sampler.topology.num_nodes), ("edge", sampler.topology.num_edges)):
        path = os.path.join(target, f"{name}.npy")
        try:
            arrays.append(np.load(path, mmap_mode="r"))
        except (OSError, ValueError) as exc:
            raise GnnZeroError(f"{path} is unreadable or truncated ({exc}); delete {target} to "
                               f"estimate the normalisation again") from exc
        if arrays[-1].shape != (size,):
            raise GnnZeroError(f"{path} holds {arrays[-1].shape[0]} values, not {size}: it "
                               f"belongs to another graph; delete {target} to estimate again")
    return SaintNorms(*arrays)
