"""Accuracy on the train/val/test masks, computed on every rank and summed across ranks."""
from __future__ import annotations

from typing import Iterator

import torch

from ..data.datasets import GraphDataset
from ..data.loaders import with_node_fields
from ..data.sharding import shard_batches
from ..models import forward_batch
from .batches import prepare_batch

# Above this many nodes, evaluation runs over METIS clusters instead of the whole graph.
FULL_GRAPH_EVAL_MAX_NODES = 500_000
SPLITS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}
_full_graph_cache: dict[int, object] = {}


def _full_graph(dataset: GraphDataset):
    key = id(dataset)
    if key not in _full_graph_cache:
        _full_graph_cache.clear()
        _full_graph_cache[key] = with_node_fields(dataset.structure(), dataset)
    return _full_graph_cache[key]


def eval_batches(dataset: GraphDataset, train_loader, rank: int, world: int) -> Iterator:
    """Batches with a ``count_mask`` so every node is counted on exactly one rank.

    Small graphs: the whole graph on every rank (exact), node ``v`` counted on
    rank ``v % world``.  Large graphs trained with Cluster-GCN: this rank's share
    of all clusters, 16 a batch (inter-cluster edges inside a batch are kept).
    """
    cluster_data = getattr(train_loader, "cluster_data", None)
    if dataset.num_nodes <= FULL_GRAPH_EVAL_MAX_NODES or cluster_data is None:
        batch = _full_graph(dataset).clone()
        batch.count_mask = batch.n_id % world == rank
        yield batch
        return
    from torch_geometric.loader import ClusterLoader

    groups = shard_batches(len(cluster_data), world, rank, 16, epoch=0, seed=0, shuffle=False)
    for batch in ClusterLoader(cluster_data, batch_sampler=[g.tolist() for g in groups]):
        batch = with_node_fields(batch, dataset)
        batch.count_mask = torch.ones(batch.num_nodes, dtype=torch.bool)
        yield batch


@torch.no_grad()
def evaluate(engine, dataset: GraphDataset, train_loader, device: torch.device,
             dtype: torch.dtype) -> dict[str, dict[str, float]]:
    """Accuracy per split, exact over the nodes evaluated, identical on every rank."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    engine.eval()
    counts = torch.zeros(len(SPLITS), 2, dtype=torch.float64, device=device)
    for batch in eval_batches(dataset, train_loader, rank, world):
        batch = prepare_batch(batch, device, dtype)
        pred = forward_batch(engine, batch).argmax(dim=-1)
        for i, mask_name in enumerate(SPLITS.values()):
            mask = batch[mask_name] & batch.count_mask
            counts[i, 0] += (pred[mask] == batch.y[mask]).sum()
            counts[i, 1] += mask.sum()
    if world > 1:
        torch.distributed.all_reduce(counts)
    engine.train()
    return {split: {"accuracy": float(c / max(t, 1)), "correct": int(c), "total": int(t)}
            for split, (c, t) in zip(SPLITS, counts.tolist())}
