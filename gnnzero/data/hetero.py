"""Heterogeneous graphs: a synthetic paper/author ``HeteroData``, rank-sharded neighbour sampling.

Loader side only: batches are PyG ``HeteroData`` from ``NeighborLoader`` with the
seed node type's ``batch_size`` first rows carrying the loss (``loss_mask``);
models come from ``torch_geometric.nn.to_hetero`` (see gnnzero/models).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .datasets import GraphDataset
from .sharding import shard_batches


def synthetic_hetero(dataset: GraphDataset, num_authors: int, papers_per_author: int = 3,
                     seed: int = 0) -> HeteroData:
    """Papers = ``dataset``'s nodes (features, labels, masks, citations); authors write papers.

    Each author writes ``papers_per_author`` papers, mostly of one class, so the
    author relation carries label signal; an author's features are the mean of
    its papers' features.  Edges exist in both directions (``writes`` /
    ``rev_writes``) so messages reach both node types.
    """
    if num_authors < 1 or papers_per_author < 1:
        raise ValueError(f"num_authors and papers_per_author must be >= 1, got {num_authors}, "
                         f"{papers_per_author}")
    rng = np.random.default_rng(seed)
    n, y = dataset.num_nodes, dataset.y.numpy()
    by_class = [np.flatnonzero(y == c) for c in range(dataset.num_classes)]
    by_class = [members for members in by_class if members.size]
    home = rng.integers(0, len(by_class), num_authors)
    author = np.repeat(np.arange(num_authors), papers_per_author)
    own = rng.random(author.size) < 0.8     # 80% of an author's papers are of its class
    home_members = [by_class[h] for h in home[author]]
    in_class = np.array([members[rng.integers(0, members.size)] for members in home_members])
    paper = np.where(own, in_class, rng.integers(0, n, author.size))
    pairs = np.unique(np.stack([author, paper]), axis=1)
    writes = torch.from_numpy(pairs.astype(np.int64))

    data = HeteroData()
    data["paper"].x = dataset.features.rows(torch.arange(n))
    data["paper"].y = dataset.y
    for name, mask in dataset.masks.items():
        data["paper"][name] = mask
    deg = torch.bincount(writes[0], minlength=num_authors).clamp(min=1).unsqueeze(1)
    author_x = torch.zeros(num_authors, data["paper"].x.size(1))
    author_x.index_add_(0, writes[0], data["paper"].x[writes[1]])
    data["author"].x = author_x / deg
    data["paper", "cites", "paper"].edge_index = dataset.edge_index
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "rev_writes", "author"].edge_index = writes.flip(0)
    return data


class HeteroNeighborLoader:
    """PyG ``NeighborLoader`` over this rank's shard of the ``target`` type's training seeds."""

    def __init__(self, data: HeteroData, target: str, num_neighbors: list[int],
                 batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        from .loaders import _require_torch_sparse

        _require_torch_sparse("heterogeneous neighbour sampling")
        if target not in data.node_types:
            raise ValueError(f"target node type '{target}' is not in the graph "
                             f"({', '.join(data.node_types)})")
        self.data, self.target = data, target
        self.num_neighbors = {edge_type: num_neighbors for edge_type in data.edge_types}
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.train_idx = data[target].train_mask.nonzero().view(-1)
        self.steps_per_epoch = len(self._batches(0))

    def _batches(self, epoch: int) -> list[list[int]]:
        groups = shard_batches(self.train_idx.numel(), self.world_size, self.rank,
                               self.batch_size, epoch, self.seed)
        return [g.tolist() for g in groups]

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[HeteroData]:
        from torch_geometric.loader import NeighborLoader

        loader = NeighborLoader(self.data, num_neighbors=self.num_neighbors,
                                input_nodes=(self.target, self.train_idx),
                                batch_sampler=self._batches(epoch)[start:])
        for batch in loader:
            store = batch[self.target]
            loss_mask = torch.zeros(store.num_nodes, dtype=torch.bool)
            loss_mask[:store.batch_size] = True
            store.loss_mask = loss_mask
            yield batch


def hetero_stores(data: HeteroData, feature_store):
    """``(feature_store, LocalGraphStore)`` holding ``data``'s node features and edges.

    ``feature_store`` is an empty store of ours (dense, sparse CSR or mmap); each
    node type's ``x`` goes in under ``group_name=<node type>``.  PyG's
    ``NeighborLoader`` takes the returned pair in place of ``data``, so features
    of a large heterogeneous graph can stay sparse or on disk.
    """
    from torch_geometric.distributed import LocalGraphStore

    for node_type in data.node_types:
        if "x" in data[node_type]:
            feature_store.put_tensor(data[node_type].x, group_name=node_type, attr_name="x",
                                     index=None)
    edge_index = {et: data[et].edge_index for et in data.edge_types}
    edge_id = {et: torch.arange(ei.size(1)) for et, ei in edge_index.items()}
    num_nodes = {nt: data[nt].num_nodes for nt in data.node_types}
    graph_store = LocalGraphStore.from_hetero_data(edge_id, edge_index, num_nodes,
                                                   is_sorted=False)
    return feature_store, graph_store
