"""Link-prediction mini-batches: the node loaders' subgraphs plus the pairs to score.

Every batch is a node batch (``x, edge_index, n_id``, ...) of the training graph
with ``edge_label_index`` (local ``[2, P + Q]``: positive edges, then sampled
non-edges) and ``edge_label`` (1 / 0):

* ``full``: the whole training graph; the training edges sharded over ranks, each
  with ``--neg-ratio`` negatives (PyG's ``negative_sampling``).
* ``cluster``: Cluster-GCN batches; the positives are the training edges inside
  the batch, the negatives sampled inside it.
* ``neighbor``: PyG's ``LinkNeighborLoader`` over this rank's shard of the
  training edges, binary negative sampling.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..errors import GnnZeroError
from .loaders import ClusterGCNLoader, GraphLoader, _require_torch_sparse, with_node_fields
from .link_split import seeded_global_rng
from .options import LINK_LOADER_KINDS
from .sharding import shard_batches


def sample_negatives(edge_index: Tensor, num_nodes: int, count: int, seed: int) -> Tensor:
    """``count`` node pairs that are no edge of ``edge_index`` (PyG's ``negative_sampling``,
    seeded without touching the global generators' streams)."""
    from torch_geometric.utils import negative_sampling

    with seeded_global_rng(seed):
        return negative_sampling(edge_index, num_nodes=num_nodes, num_neg_samples=count)


def with_pairs(batch: Data, pos: Tensor, neg: Tensor) -> Data:
    batch.edge_label_index = torch.cat([pos, neg], dim=1)
    batch.edge_label = torch.cat([torch.ones(pos.size(1)), torch.zeros(neg.size(1))])
    return batch


def _batch_seed(seed: int, epoch: int, rank: int, step: int) -> int:
    return (((seed * 1_000_003 + epoch) * 1009 + rank) * 100_003 + step) % (2**63)


class LinkFullBatchLoader(GraphLoader):
    """The whole training graph every step; each rank scores a disjoint share of the edges."""

    prefetch_safe = False  # the negatives are drawn on the global generator (forked)

    def __init__(self, *args, neg_ratio: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.neg_ratio = neg_ratio
        self.pos = self.dataset.link_split.train_pos
        self.graph = with_node_fields(self.dataset.structure(), self.dataset)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        if start >= 1:
            return
        mine = torch.from_numpy(shard_batches(self.pos.size(1), self.world_size, self.rank,
                                              self.pos.size(1), epoch, self.seed)[0])
        pos = self.pos[:, mine]
        neg = sample_negatives(self.graph.edge_index, self.dataset.num_nodes,
                               max(1, round(self.neg_ratio * pos.size(1))),
                               _batch_seed(self.seed, epoch, self.rank, 0))
        batch = with_pairs(self.graph.clone(), pos, neg)
        batch.loss_mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
        yield batch


class LinkClusterLoader(ClusterGCNLoader):
    """Cluster-GCN batches carrying their inner training edges and as many sampled
    non-edges (times ``--neg-ratio``) inside the batch."""

    prefetch_safe = False

    def __init__(self, *args, neg_ratio: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.neg_ratio = neg_ratio

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        for step, batch in enumerate(super().epoch(epoch, start), start):
            edges = batch.edge_index
            pos = edges[:, edges[0] < edges[1]]
            count = round(self.neg_ratio * pos.size(1))
            neg = sample_negatives(edges, batch.num_nodes, count,
                                   _batch_seed(self.seed, epoch, self.rank, step)) \
                if count else edges.new_empty(2, 0)
            yield with_pairs(batch, pos, neg)


class LinkNeighborSamplingLoader(GraphLoader):
    """PyG's ``LinkNeighborLoader`` over this rank's shard of the training edges."""

    prefetch_safe = False  # the sampler draws from torch's global RNG

    def __init__(self, *args, neg_ratio: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _require_torch_sparse("--task link --loader neighbor")
        self.neg_ratio = neg_ratio
        self.pos = self.dataset.link_split.train_pos
        self.structure = self.dataset.structure()
        self.steps_per_epoch = len(self._batches(0))

    def _batches(self, epoch: int) -> list[list[int]]:
        return [g.tolist() for g in shard_batches(self.pos.size(1), self.world_size, self.rank,
                                                  self.opts.batch_size, epoch, self.seed)]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        from torch_geometric.loader import LinkNeighborLoader
        from torch_geometric.sampler import NegativeSampling

        if start == 0:  # on resume, the restored RNG state continues the stream
            torch.manual_seed(_batch_seed(self.seed, epoch, self.rank, 0))
        loader = LinkNeighborLoader(self.structure, num_neighbors=self.opts.num_neighbors,
                                    edge_label_index=self.pos,
                                    neg_sampling=NegativeSampling("binary", self.neg_ratio),
                                    batch_sampler=self._batches(epoch)[start:])
        for batch in loader:
            batch = with_node_fields(batch, self.dataset)
            batch.edge_label = batch.edge_label.float()
            batch.loss_mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
            yield batch


def build_link_loader(dataset, opts, rank: int, world_size: int, seed: int,
                      neg_ratio: float) -> GraphLoader:
    """The link-prediction training loader of kind ``opts.kind`` for this rank."""
    classes = {"full": LinkFullBatchLoader, "cluster": LinkClusterLoader,
               "neighbor": LinkNeighborSamplingLoader}
    if opts.kind not in classes:
        raise GnnZeroError(f"--task link trains on --loader {' / '.join(LINK_LOADER_KINDS)}, "
                           f"not --loader {opts.kind}; choose one of those")
    if dataset.link_split is None:
        raise GnnZeroError("a link loader needs a dataset with hidden edges "
                           "(gnnzero.data.link_split.split_edges)")
    return classes[opts.kind](dataset, opts, rank, world_size, seed, neg_ratio=neg_ratio)
