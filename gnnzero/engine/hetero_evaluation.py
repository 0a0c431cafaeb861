"""Evaluation of a heterogeneous graph's target node type: exact or sampled.

* ``full-graph`` -- one forward over the whole ``HeteroData`` per rank (exact; graphs up
  to :data:`~gnnzero.engine.evaluation.FULL_GRAPH_EVAL_MAX_NODES` nodes).
* ``neighbourhoods`` -- every labelled target node predicted from its full
  ``num_layers``-hop neighbourhood over every edge type (PyG ``NeighborLoader``, fan-out
  -1), each rank a share: exact, and bounded by a batch's neighbourhood, not the graph.
  PyG's ``to_hetero`` models have no layer-wise inference, so this is the large-graph path.
* ``sampled`` -- the same for a seeded random sample of validation nodes, with a Wilson
  interval: cheap enough for every epoch.

Metrics come from the homogeneous path's :class:`~gnnzero.engine.evaluation.SplitTally`
(a confusion matrix summed over ranks, one-vs-rest ROC-AUC at the end).
"""
from __future__ import annotations

import copy
import math
from typing import Iterator

import torch

from ..data.hetero import HeteroGraphDataset
from ..utils.dist import rank_world
from .evaluation import SPLITS, _equal_batches, _evaluate_batches, _module, wilson_interval

HETERO_EVAL_METHODS = ("full-graph", "neighbourhoods", "sampled")


# ``--eval-method auto`` above FULL_GRAPH_EVAL_MAX_NODES nodes (``auto_eval_method``'s ``above``)
LARGE_GRAPH_METHOD = ("neighbourhoods", "exact, each target node from its full neighbourhood")


def _whole_graph(dataset: HeteroGraphDataset, rank: int, world: int) -> Iterator:
    """The whole graph (a shallow copy: its tensors are the dataset's); target node ``v``
    counted on rank ``v % world``."""
    batch = copy.copy(dataset.data)
    batch.target_type = dataset.target
    count = torch.arange(dataset.data[dataset.target].num_nodes) % world == rank
    batch[dataset.target].count_mask = count
    yield batch


def _neighbourhoods(dataset: HeteroGraphDataset, nodes: torch.Tensor, hops: int,
                    batch_size: int) -> Iterator:
    """This rank's share of ``nodes`` (target-type ids), each batch with the seeds' full
    ``hops``-hop neighbourhoods; every rank runs the same number of forwards (ZeRO-3)."""
    from torch_geometric.loader import NeighborLoader

    from ..data.loaders import _require_torch_sparse

    _require_torch_sparse("heterogeneous evaluation with NeighborLoader")
    rank, world = rank_world()
    per_rank = math.ceil(nodes.numel() / world)
    batches = _equal_batches(nodes[rank::world], math.ceil(per_rank / batch_size),
                             filler=int(nodes[0]))
    data, target = dataset.data, dataset.target
    loader = NeighborLoader(data, num_neighbors={et: [-1] * hops for et in data.edge_types},
                            input_nodes=target, batch_sampler=[ids for ids, _ in batches],
                            generator=torch.Generator())   # the training RNG stays untouched
    for batch, (_, keep) in zip(loader, batches):
        count = torch.zeros(batch[target].num_nodes, dtype=torch.bool)
        count[:keep] = True
        batch[target].count_mask = count
        batch.target_type = target
        yield batch


def _labelled(dataset: HeteroGraphDataset) -> torch.Tensor:
    masks = dataset.masks
    return (masks["train_mask"] | masks["val_mask"] | masks["test_mask"]).nonzero().view(-1)


@torch.no_grad()
def evaluate_hetero(method: str, engine, dataset: HeteroGraphDataset, device: torch.device,
                    dtype: torch.dtype = torch.float32, batch_size: int = 4096,
                    roc_auc: bool = False) -> dict[str, dict]:
    """Exact metrics per split of the target type by ``method`` (full-graph or
    neighbourhoods), each labelled; the same on all ranks."""
    if method == "full-graph":
        rank, world = rank_world()
        batches = _whole_graph(dataset, rank, world)
    elif method == "neighbourhoods":
        batches = _neighbourhoods(dataset, _labelled(dataset), len(_module(engine).convs),
                                  batch_size)
    else:
        raise ValueError(f"heterogeneous evaluation method '{method}' is unknown; choose one "
                         f"of {', '.join(HETERO_EVAL_METHODS)}")
    result = _evaluate_batches(engine, dataset, batches, device, dtype, roc_auc)
    for split in result.values():
        split["method"] = method
    return result


@torch.no_grad()
def evaluate_hetero_sampled(engine, dataset: HeteroGraphDataset, num_nodes: int,
                            device: torch.device, dtype: torch.dtype = torch.float32,
                            seed: int = 0, epoch: int = 0, batch_size: int = 512,
                            confidence: float = 0.95) -> dict:
    """Validation accuracy on ``num_nodes`` random validation nodes of the target type, each
    from its full neighbourhood (so each prediction is the exact one), with a Wilson
    interval; all ranks draw the same sample (``seed``, ``epoch``) and share it."""
    population = dataset.masks[SPLITS["val"]].nonzero().view(-1)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    sample = population[torch.randperm(population.numel(), generator=generator)[:num_nodes]]
    batches = _neighbourhoods(dataset, sample, len(_module(engine).convs), batch_size)
    val = _evaluate_batches(engine, dataset, batches, device, dtype)["val"]
    low, high = wilson_interval(val["correct"], val["total"], confidence)
    return {"split": "val", "accuracy": val["accuracy"], "correct": val["correct"],
            "total": val["total"], "ci_low": low, "ci_high": high, "confidence": confidence,
            "population": int(population.numel()), "method": "sampled"}
