"""Exact layer-wise inference in bounded memory (PyG's ``BasicGNN.inference`` pattern).

Layer ``l`` is computed for every node before layer ``l + 1`` starts, a chunk of
consecutive target nodes at a time from their whole 1-hop in-neighbourhood, read
straight from the (mapped) CSR.  Each rank computes only its share of the rows
and writes them into a shared memory-mapped scratch array (one ``N x width``
float32 file per layer); after a barrier every rank reads the previous layer's
rows it needs from that file.  No rank all-gathers an ``N x hidden`` tensor, builds
the normalised edge list, or holds more than one chunk's subgraph; the scratch
pages are file pages the ranks of a node share.  Every rank runs the same number
of chunks (padded with a discarded one), so ZeRO-3's parameter gathers stay in step.

Written by hand because PyG's ``BasicGNN.inference`` keeps every layer's
``N x hidden`` output in RAM and takes a ``NeighborLoader`` over a private int64 CSC.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm import tqdm

from ..data.csr import Topology
from ..data.datasets import GraphDataset
from ..data.neighbour_sampling import sample_neighbourhood
from ..data.prepared import mapped_tensor
from ..errors import GnnZeroError
from ..models.sparse_input import is_sparse
from ..utils.dist import all_reduce, barrier, gather_objects, rank_world

LAYERWISE_BATCH = 4096        # most target nodes a chunk
LAYERWISE_EDGES = 500_000     # most edges a chunk (bounds the messages tensor)


# ----------------------------------------------------------------- model internals

def _module(model):
    """The ``BasicGNN`` inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def _inner_conv(conv):
    return getattr(conv, "layer", conv)  # CheckpointedLayer wraps the conv as ``.layer``


def layerwise_unsupported_reason(model) -> Optional[str]:
    """Why exact layer-wise inference cannot reproduce this model's forward (None if it can)."""
    gnn = _module(model)
    if not hasattr(gnn, "convs") or not hasattr(gnn, "norms"):
        return f"{type(gnn).__name__} is not a PyG BasicGNN"
    for norm in gnn.norms:
        name = type(norm).__name__
        if name not in ("Identity", "BatchNorm"):
            return (f"{name} normalises over all nodes of a batch, so its output depends on the "
                    f"batch; only norm=None or norm=batch are node-local")
    if getattr(gnn, "jk_mode", None) not in (None, "last", "cat", "max"):
        return f"jk={gnn.jk_mode} is not supported layer-wise"
    return None


def _gcn_convs(gnn) -> list:
    from torch_geometric.nn import GCNConv

    return [c for c in map(_inner_conv, gnn.convs) if isinstance(c, GCNConv) and c.normalize]


@contextmanager
def global_gcn_normalisation(gnn) -> Iterator[bool]:
    """Switch GCN's own normalisation off while edges carry the whole graph's GCN weights.

    GCN's weight ``1/sqrt(d_u d_v)`` needs the degree of the *source* node ``u``,
    which a subgraph does not contain; the weights come from whole-graph degrees.
    """
    convs = _gcn_convs(gnn)
    for conv in convs:
        conv.normalize = False
    try:
        yield bool(convs)
    finally:
        for conv in convs:
            conv.normalize = True


def post_conv(gnn, layer: int, x: Tensor) -> Tensor:
    """What ``BasicGNN.forward`` does after conv ``layer`` (eval mode: no dropout)."""
    if layer == gnn.num_layers - 1 and gnn.jk_mode is None:
        return x
    if gnn.act is not None and gnn.act_first:
        x = gnn.act(x)
    x = gnn.norms[layer](x)
    if gnn.act is not None and not gnn.act_first:
        x = gnn.act(x)
    return x


# ------------------------------------------------------------------ the graph read

def self_loop_counts(topology: Topology, chunk: int = 1 << 18) -> np.ndarray:
    """Self-loops into each node, counted a chunk of targets at a time."""
    counts = np.zeros(topology.num_nodes, dtype=np.int64)
    for a in range(0, topology.num_nodes, chunk):
        b = min(a + chunk, topology.num_nodes)
        lo, hi = int(topology.indptr[a]), int(topology.indptr[b])
        target = np.repeat(np.arange(a, b), np.diff(np.asarray(topology.indptr[a:b + 1])))
        loops = target[np.asarray(topology.indices[lo:hi]) == target]
        counts += np.bincount(loops, minlength=topology.num_nodes)
    return counts


@dataclass
class InferenceGraph:
    """What each chunk reads: the topology, PinSAGE's edge weights, GCN's 1/sqrt(degree)."""

    topology: Topology
    weight: Optional[np.ndarray] = None
    gcn_dinv: Optional[np.ndarray] = None

    @classmethod
    def of(cls, dataset: GraphDataset, gnn, gcn: bool) -> "InferenceGraph":
        if hasattr(gnn, "importance_graph"):   # PinSAGE: its own graph, built once (small graphs)
            edge_index, weight = gnn.importance_graph(dataset.edge_index, dataset.num_nodes)
            order = np.argsort(edge_index[1].numpy(), kind="stable")
            topology = Topology.from_edge_index(edge_index, dataset.num_nodes)
            return cls(topology, weight.numpy()[order])
        if not gcn:
            return cls(dataset.topology)
        # gcn_norm(add_self_loops=True): degree = in-edges other than self-loops, plus one loop
        loops = dataset.info.get("_self_loops")
        if loops is None:
            loops = dataset.info["_self_loops"] = self_loop_counts(dataset.topology)
        degree = (dataset.topology.in_degree() - loops + 1).astype(np.float32)
        return cls(dataset.topology, gcn_dinv=degree ** -0.5)

    def chunk(self, a: int, b: int) -> tuple[np.ndarray, Tensor, Optional[Tensor]]:
        """``(n_id, edge_index, edge_weight)`` of targets ``a..b-1``: targets first, then
        their other in-neighbours (sorted); edges point into the targets."""
        indptr = self.topology.indptr
        lo, hi = int(indptr[a]), int(indptr[b])
        src = np.asarray(self.topology.indices[lo:hi], dtype=np.int64)
        dst = np.repeat(np.arange(b - a), np.diff(np.asarray(indptr[a:b + 1])))
        weight = None if self.weight is None else np.asarray(self.weight[lo:hi], np.float32)
        if self.gcn_dinv is not None:
            keep = src != dst + a
            src, dst = src[keep], dst[keep]
            dinv = self.gcn_dinv
            weight = np.concatenate([dinv[src] * dinv[dst + a], dinv[a:b] * dinv[a:b]])
            src = np.concatenate([src, np.arange(a, b)])
            dst = np.concatenate([dst, np.arange(b - a)])
        outside = (src < a) | (src >= b)
        extra = np.sort(src[outside])       # sort-based unique: numpy's hash unique is slower
        if extra.size:
            extra = extra[np.concatenate(([True], extra[1:] != extra[:-1]))]
        local = np.where(outside, (b - a) + np.searchsorted(extra, src), src - a)
        n_id = np.concatenate([np.arange(a, b), extra])
        edge_index = torch.from_numpy(np.stack([local, dst]))
        return n_id, edge_index, None if weight is None else torch.from_numpy(weight)

    def neighbourhood(self, seeds: np.ndarray, hops: int) -> Data:
        """The full ``hops``-hop in-neighbourhood of ``seeds`` (seeds first), with the edge
        weights of this graph: what a sampled prediction needs to equal the exact one."""
        batch = sample_neighbourhood(self.topology, seeds, [-1] * hops, None, edge_ids=True)
        src, dst = batch.edge_index.numpy()
        n_id, positions = batch.n_id.numpy(), batch.e_id.numpy()
        del batch.e_id
        if self.weight is not None:
            batch.edge_weight = torch.from_numpy(np.asarray(self.weight[positions], np.float32))
        if self.gcn_dinv is not None:     # gcn_norm: one self-loop per node, whole-graph degrees
            keep = n_id[src] != n_id[dst]
            src, dst = src[keep], dst[keep]
            dinv, local = self.gcn_dinv, np.arange(n_id.size)
            batch.edge_weight = torch.from_numpy(np.concatenate(
                [dinv[n_id[src]] * dinv[n_id[dst]], dinv[n_id] * dinv[n_id]]))
            batch.edge_index = torch.from_numpy(np.stack([np.concatenate([src, local]),
                                                          np.concatenate([dst, local])]))
        return batch


# ----------------------------------------------------------------- shared scratch

class Scratch:
    """``N x width`` float32 arrays in files every rank of a node maps (shared page cache).

    ``folder`` must be the same path on every rank and, across nodes, shared storage;
    a rank that cannot see rank 0's folder makes every rank refuse with one line.
    """

    def __init__(self, folder: Optional[str], num_nodes: int) -> None:
        self.rank, self.world = rank_world()
        self.num_nodes = num_nodes
        self.owned = folder is None
        if folder is None:          # rank 0 picks a private temporary folder and shares its name
            folder = gather_objects(tempfile.mkdtemp(prefix="gnnzero-eval-")
                                    if self.rank == 0 else None)[0]
        self.folder = folder
        if self.rank == 0:
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, ".visible"), "w").close()
        barrier()
        blind = all_reduce([0.0 if os.path.exists(os.path.join(folder, ".visible")) else 1.0])[0]
        if blind:
            raise GnnZeroError(f"{int(blind)} rank(s) cannot see the evaluation scratch folder "
                               f"{folder}; on several nodes put --eval-scratch-dir on storage "
                               f"all nodes share")

    def array(self, name: str, width: int) -> np.memmap:
        """A new ``num_nodes x width`` array, created by rank 0, mapped writable by all."""
        path = os.path.join(self.folder, f"{name}.npy")
        if self.rank == 0:
            created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                shape=(self.num_nodes, width))
            del created                 # a sparse file: no page is written until a rank does
        barrier()
        return np.load(path, mmap_mode="r+")

    def close(self) -> None:
        """Remove the files once every rank is done (maps stay readable until dropped)."""
        barrier()
        if self.rank == 0:
            for name in os.listdir(self.folder):
                if name.endswith(".npy") or name == ".visible":
                    os.unlink(os.path.join(self.folder, name))
            if self.owned or not os.listdir(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)


# ------------------------------------------------------------------ the inference

@dataclass
class InferenceOutput:
    """Logits (and optionally the last hidden representation) of the nodes ``node_ids``;
    the tensors map the scratch files (rows are read when used).  ``all_logits`` maps every
    rank's rows (``N x classes``)."""

    node_ids: Tensor
    logits: Tensor
    hidden: Optional[Tensor] = None
    all_logits: Optional[np.ndarray] = None


def _chunks(indptr: np.ndarray, bounds: list[int], rank: int, batch_size: int,
            edge_budget: int) -> list[tuple[int, int, bool]]:
    """This rank's rows cut into ranges of about equal edge counts, as many on every rank
    (enough that no range exceeds ``batch_size`` targets or ``edge_budget`` edges on any
    rank); an empty range becomes ``(0, 1)``, computed and discarded, so every rank runs
    the same number of forwards (ZeRO-3 gathers stay in step)."""
    ranges = list(zip(bounds[:-1], bounds[1:]))
    num = max(max(-(-(b - a) // batch_size), -(-int(indptr[b] - indptr[a]) // edge_budget), 1)
              for a, b in ranges)
    lo, hi = ranges[rank]
    goals = np.linspace(float(indptr[lo]), float(indptr[hi]), num + 1)
    cuts = np.clip(np.searchsorted(np.asarray(indptr[lo:hi + 1]), goals) + lo, lo, hi)
    cuts[0], cuts[-1] = lo, hi
    cuts = np.maximum.accumulate(cuts)
    return [(int(a), int(b), True) if b > a else (0, 1, False)
            for a, b in zip(cuts[:-1], cuts[1:])]


def _takes_pairs(conv) -> bool:
    """Whether the conv accepts ``(x_source, x_target)`` (PyG's bipartite form); GCN does not."""
    from torch_geometric.nn import GATConv, GINConv, SAGEConv

    return isinstance(_inner_conv(conv), (SAGEConv, GINConv, GATConv))


def _rows(dataset: GraphDataset, previous: Optional[np.ndarray], n_id: np.ndarray, gnn,
          device: torch.device, dtype: torch.dtype) -> Tensor:
    """The layer's input rows of ``n_id`` on the device: the features as batches carry them
    (with ``--categorical``, through the model's input encoder), else the previous layer's."""
    if previous is not None:
        return torch.from_numpy(np.asarray(previous[n_id])).to(device=device, dtype=dtype)
    index = torch.from_numpy(n_id)
    x = dataset.batch_features(index).to(device=device, dtype=dtype)
    encoder = getattr(gnn, "input_encoder", None)
    if encoder is not None:
        x = encoder(x, dataset.categorical[index].to(device))
    return x


@torch.no_grad()
def layerwise_inference(model, dataset: GraphDataset, device: torch.device,
                        dtype: torch.dtype = torch.float32, batch_size: int = LAYERWISE_BATCH,
                        return_hidden: bool = False, show: bool = False,
                        scratch_dir: Optional[str] = None) -> InferenceOutput:
    """Logits of this rank's share of the nodes (a contiguous range), one layer at a time.

    ``model`` is a ``BasicGNN`` or a DeepSpeed engine wrapping one; every rank calls
    this together.  With ``return_hidden`` the classifier's input (the last conv's
    input, or the jumping-knowledge output) is returned too.
    """
    reason = layerwise_unsupported_reason(model)
    if reason:
        raise GnnZeroError(f"exact layer-wise evaluation is not possible: {reason}")
    gnn = _module(model)
    rank, world = rank_world()
    n = dataset.num_nodes
    bounds = [n * r // world for r in range(world + 1)]
    lo, hi = bounds[rank], bounds[rank + 1]
    chunks = _chunks(dataset.topology.indptr, bounds, rank, batch_size, LAYERWISE_EDGES)
    scratch = Scratch(scratch_dir, n)
    was_training = gnn.training
    gnn.eval()
    outputs: list[np.ndarray] = []
    previous: Optional[np.ndarray] = None
    bar = tqdm(total=gnn.num_layers * len(chunks), desc="layer-wise inference",
               disable=not show, leave=False, dynamic_ncols=True)
    try:
        with global_gcn_normalisation(gnn) as gcn:
            graph = InferenceGraph.of(dataset, gnn, gcn)
            bipartite = [_takes_pairs(conv) for conv in gnn.convs]
            for layer in range(gnn.num_layers):
                out_array: Optional[np.ndarray] = None
                for a, b, keep in chunks:
                    n_id, edge_index, weight = graph.chunk(a, b)
                    x = _rows(dataset, previous, n_id, gnn, device, dtype)
                    if bipartite[layer] and not is_sparse(x):  # only the targets' outputs
                        x = (x, x[:b - a])
                    args = (x, edge_index.to(device)) + (() if weight is None else
                                                         (weight.to(device),))
                    out = post_conv(gnn, layer, gnn.convs[layer](*args)[:b - a]).float().cpu()
                    if out_array is None:
                        out_array = scratch.array(f"layer{layer}", out.size(1))
                    if keep:
                        out_array[a:b] = out.numpy()
                    bar.update(1)
                out_array.flush()
                barrier()                # every rank's rows are in the file before the next layer
                outputs.append(out_array)
                previous = out_array
        logits, hidden = _head(gnn, dataset, outputs, chunks, scratch, device, dtype,
                               return_hidden)
    finally:
        bar.close()
        gnn.train(was_training)
        scratch.close()
    return InferenceOutput(torch.arange(lo, hi), mapped_tensor(logits[lo:hi]),
                           None if hidden is None else mapped_tensor(hidden[lo:hi]), logits)


def _head(gnn, dataset: GraphDataset, outputs: list[np.ndarray], chunks, scratch: Scratch,
          device, dtype, return_hidden: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Logits (and hidden rows) after the last conv: jumping knowledge + classifier, chunk
    by chunk (the same number of ``lin`` calls on every rank for ZeRO-3)."""
    if gnn.jk_mode is None:
        if not return_hidden:
            return outputs[-1], None
        if len(outputs) > 1:
            return outputs[-1], outputs[-2]
        lo, hi = chunks[0][0], chunks[-1][1]
        features = dataset.features.rows(torch.arange(lo, hi)).numpy()
        hidden = np.zeros((dataset.num_nodes, features.shape[1]), np.float32)
        hidden[lo:hi] = features     # one layer: the classifier's input is the features
        return outputs[-1], hidden
    logits = hidden = None
    for a, b, keep in chunks:
        combined = gnn.jk([torch.from_numpy(np.asarray(h[a:b])).to(device=device, dtype=dtype)
                           for h in outputs])
        out = gnn.lin(combined).float().cpu()
        if logits is None:
            logits = scratch.array("logits", out.size(1))
            hidden = scratch.array("hidden", combined.size(1)) if return_hidden else None
        if keep:
            logits[a:b] = out.numpy()
            if hidden is not None:
                hidden[a:b] = combined.float().cpu().numpy()
    return logits, hidden
