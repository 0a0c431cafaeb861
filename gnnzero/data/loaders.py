"""Rank-sharded mini-batch loaders built on PyG's loaders.

Partitioners and samplers see only the graph *structure* (edges + ``n_id``);
each batch's features, labels and masks are gathered afterwards from the
dataset's feature store by global node id, so features can stay sparse or on
disk.  Every batch is a PyG ``Data`` with ``x, y, edge_index, n_id`` and the
masks, plus ``loss_mask`` (nodes whose loss counts), and for GraphSAINT
``loss_weight`` (node normalisation) and ``edge_weight`` (edge normalisation).
"""
from __future__ import annotations

import tempfile
from typing import Iterator

import numpy as np
import torch
from torch_geometric.data import Data

from ..errors import GnnZeroError
from .datasets import GraphDataset
from .options import LOADER_KINDS, LoaderOptions
from .sharding import shard_batches
from .validate import validate_num_parts

def with_node_fields(batch: Data, dataset: GraphDataset) -> Data:
    """Attach features, labels and masks of ``batch.n_id`` from the dataset's stores."""
    for key, value in dataset.node_fields(batch.n_id).items():
        batch[key] = value
    return batch


class GraphLoader:
    """Base: ``epoch(e)`` yields this rank's batches; all ranks yield ``steps_per_epoch``."""

    steps_per_epoch: int = 1
    # Batches come from the loader's own seeded generators, so a background thread may build
    # them (engine/prefetch.py) without changing what the main thread's dropout draws.
    prefetch_safe: bool = True

    def __init__(self, dataset: GraphDataset, opts: LoaderOptions, rank: int,
                 world_size: int, seed: int) -> None:
        self.dataset, self.opts = dataset, opts
        self.rank, self.world_size, self.seed = rank, world_size, seed

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        """This rank's batches of ``epoch``, skipping the first ``start`` (for resuming)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.steps_per_epoch


class FullBatchLoader(GraphLoader):
    """The whole graph every step; each rank's loss covers a disjoint half of the train nodes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.train_idx = self.dataset.masks["train_mask"].nonzero().view(-1)
        self.graph = with_node_fields(self.dataset.structure(), self.dataset)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        if start >= 1:
            return
        batch = self.graph.clone()
        mine = shard_batches(self.train_idx.numel(), self.world_size, self.rank,
                             self.train_idx.numel(), epoch, self.seed)
        loss_mask = torch.zeros(self.dataset.num_nodes, dtype=torch.bool)
        loss_mask[self.train_idx[torch.from_numpy(np.concatenate(mine))]] = True
        batch.loss_mask = loss_mask
        yield batch


class ClusterGCNLoader(GraphLoader):
    """METIS clusters (pymetis, cached beside the graph), several clusters a batch, clusters
    sharded by rank.  Each batch is sliced from the (mapped) CSR by partition: the subgraph
    PyG's ``ClusterLoader`` yields, without ``ClusterData``'s permuted copy of the graph."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from .partition import load_partition, partitions_folder

        self.num_parts = self.opts.resolved_num_parts(self.dataset.num_nodes)
        folder = partitions_folder(self.dataset, self.opts.cache_dir)
        if folder is None:   # no cache: a folder of this loader's, deleted with it
            self._scratch = tempfile.TemporaryDirectory(prefix="gnnzero-parts-")
            folder = self._scratch.name
        self.partition = load_partition(self.dataset.topology, self.num_parts, folder)
        self.steps_per_epoch = len(self._batches(0))

    def _batches(self, epoch: int) -> list[list[int]]:
        groups = shard_batches(self.num_parts, self.world_size, self.rank,
                               self.opts.clusters_per_batch, epoch, self.seed)
        return [g.tolist() for g in groups]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        for parts in self._batches(epoch)[start:]:
            batch = with_node_fields(self.partition.batch(self.dataset.topology, parts),
                                     self.dataset)
            batch.loss_mask = batch.train_mask
            yield batch


def _require_torch_sparse(what: str) -> None:
    import torch_geometric.typing as pyg_typing

    if not (pyg_typing.WITH_TORCH_SPARSE or pyg_typing.WITH_PYG_LIB):
        raise GnnZeroError(f"{what} needs torch-sparse (and torch-scatter) or pyg-lib; run "
                           f"`make install` (builds them from source) or use --loader cluster")


NEIGHBOUR_STREAM = 0x4E42   # the tag of the neighbour sampler's generators
SAINT_STREAM = 0x5347      # the tag of the GraphSAINT samplers' generators


class SaintLoader(GraphLoader):
    """GraphSAINT node / edge / random-walk samples (:mod:`~gnnzero.data.saint`), read from the
    (mapped) CSR, with the normalisation cached beside the graph's partitions; each step from a
    generator of its own seeded by (seed, epoch, rank, step), like the neighbour loader."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from .partition import partitions_folder
        from .saint import SaintSampler, load_norms

        opts = self.opts
        self.sampler = SaintSampler(self.dataset.topology, opts.kind, opts.batch_size,
                                    opts.walk_length)
        self.steps_per_epoch = opts.saint_steps or max(
            1, self.dataset.num_nodes // (self.sampler.nodes_per_sample * self.world_size))
        self.norms = None
        if opts.sample_coverage:
            folder = partitions_folder(self.dataset, opts.cache_dir)
            self.norms = load_norms(self.sampler, opts.sample_coverage, folder)

    def generator(self, epoch: int, step: int) -> np.random.Generator:
        return np.random.default_rng([SAINT_STREAM, self.seed, epoch, self.rank, step])

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        for step in range(start, self.steps_per_epoch):
            batch = with_node_fields(self.sampler.batch(self.generator(epoch, step), self.norms),
                                     self.dataset)
            batch.loss_mask = batch.train_mask
            if self.norms is not None:
                batch.loss_weight = batch.node_norm
                batch.edge_weight = batch.edge_norm
            yield batch


class NeighborSamplingLoader(GraphLoader):
    """Neighbour sampling over this rank's shard of the training seeds: PyG
    ``NeighborLoader``'s batches, sampled straight from the (mapped) CSR
    (:mod:`~gnnzero.data.neighbour_sampling`), each step from a generator of its own seeded
    by (seed, epoch, rank, step): reproducible, resumable mid-epoch, safe to prefetch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.train_idx = self.dataset.masks["train_mask"].nonzero().view(-1).numpy()
        self.steps_per_epoch = len(self._batches(0))

    def _batches(self, epoch: int) -> list[np.ndarray]:
        return shard_batches(self.train_idx.size, self.world_size, self.rank,
                             self.opts.batch_size, epoch, self.seed)

    def generator(self, epoch: int, step: int) -> np.random.Generator:
        """The neighbour draws of one step: a stream of its own (tagged, so it is not the
        shared shuffle stream ``epoch_rng(seed, epoch)``)."""
        return np.random.default_rng([NEIGHBOUR_STREAM, self.seed, epoch, self.rank, step])

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        from .neighbour_sampling import sample_neighbourhood

        for step, positions in enumerate(self._batches(epoch)[start:], start):
            batch = sample_neighbourhood(self.dataset.topology, self.train_idx[positions],
                                         self.opts.num_neighbors, self.generator(epoch, step))
            batch = with_node_fields(batch, self.dataset)
            seed_mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
            seed_mask[:batch.batch_size] = True
            batch.loss_mask = seed_mask
            yield batch


def build_loader(dataset: GraphDataset, opts: LoaderOptions, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> GraphLoader:
    """The training loader of kind ``opts.kind`` for this rank."""
    classes = {"full": FullBatchLoader, "cluster": ClusterGCNLoader, "neighbor": NeighborSamplingLoader,
               "saint-rw": SaintLoader, "saint-node": SaintLoader, "saint-edge": SaintLoader}
    if opts.kind not in classes:
        raise GnnZeroError(f"unknown --loader '{opts.kind}'; choose one of {', '.join(LOADER_KINDS)}")
    if opts.kind == "cluster":
        validate_num_parts(opts.resolved_num_parts(dataset.num_nodes), dataset.num_nodes)
    return classes[opts.kind](dataset, opts, rank, world_size, seed)
