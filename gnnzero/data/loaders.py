"""Rank-sharded mini-batch loaders built on PyG's loaders.

Partitioners and samplers see only the graph *structure* (edges + ``n_id``);
each batch's features, labels and masks are gathered afterwards from the
dataset's feature store by global node id, so features can stay sparse or on
disk.  Every batch is a PyG ``Data`` with ``x, y, edge_index, n_id`` and the
masks, plus ``loss_mask`` (nodes whose loss counts), and for GraphSAINT
``loss_weight`` (node normalisation) and ``edge_weight`` (edge normalisation).
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np
import torch
from torch_geometric.data import Data

from ..errors import GnnZeroError
from ..utils.atomic import atomic_torch_save
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


class SaintLoader(GraphLoader):
    """PyG's GraphSAINT node / edge / random-walk samplers with cached normalisation."""

    prefetch_safe = False  # PyG's samplers draw from torch's global RNG

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _require_torch_sparse(f"--loader {self.opts.kind}")
        from .saint import SAINT_SAMPLERS

        opts, n = self.opts, self.dataset.num_nodes
        # Nodes one sample covers: roots x walk, 2 per sampled edge, or the node budget.
        per_step = opts.batch_size * {"saint-rw": opts.walk_length + 1, "saint-edge": 2,
                                      "saint-node": 1}[opts.kind]
        self.steps_per_epoch = opts.saint_steps or max(1, n // (per_step * self.world_size))
        cls = SAINT_SAMPLERS[opts.kind]
        extra = {"walk_length": opts.walk_length} if opts.kind == "saint-rw" else {}
        torch.manual_seed(self.seed)  # identical norms on every rank
        self.sampler = cls(self.dataset.structure(), batch_size=opts.batch_size,
                           num_steps=self.steps_per_epoch, sample_coverage=0, log=False, **extra)
        self._load_or_compute_norm(cls.__name__, extra)

    def _load_or_compute_norm(self, name: str, extra: dict) -> None:
        """Normalisation coefficients, cached per graph fingerprint and sampler settings."""
        opts, path = self.opts, None
        if opts.cache_dir:
            tag = "_".join(f"{k}{v}" for k, v in extra.items())
            path = os.path.join(opts.cache_dir, self.dataset.fingerprint(),
                                f"{name.lower()}_b{opts.batch_size}_{tag}_c{opts.sample_coverage}_norm.pt")
        self.norm_from_cache = bool(path and os.path.exists(path))
        if self.norm_from_cache:
            node_norm, edge_norm = torch.load(path)
        else:
            self.sampler.sample_coverage = opts.sample_coverage
            node_norm, edge_norm = self.sampler._compute_norm()
            if path:
                atomic_torch_save((node_norm, edge_norm), path)
        self.sampler.sample_coverage = opts.sample_coverage
        self.sampler.node_norm, self.sampler.edge_norm = node_norm, edge_norm

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Data]:
        # Disjoint random streams per rank and epoch (the sampler draws from the
        # global RNG).  On resume (start > 0) the RNG state restored from the
        # checkpoint continues the stream, so the remaining steps are the same.
        if start == 0:
            torch.manual_seed((self.seed * 1_000_003 + epoch * 1009 + self.rank) % (2**63))
        for step in range(start, self.steps_per_epoch):
            batch = self.sampler._collate([self.sampler[step]])
            batch = with_node_fields(batch, self.dataset)
            batch.loss_mask = batch.train_mask
            batch.loss_weight = batch.node_norm
            batch.edge_weight = batch.edge_norm
            yield batch


NEIGHBOUR_STREAM = 0x4E42   # the tag of the neighbour sampler's generators


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
