"""Node-classification evaluation: sampled (with a confidence interval) and exact layer-wise.

* :func:`evaluate_sampled` -- a random subset of one split's nodes, each predicted
  from its full k-hop neighbourhood (PyG ``NeighborLoader`` with fan-out -1), so
  every sampled prediction equals the exact one and the only error is which
  nodes were drawn; reported with a Wilson interval.  Cheap enough for every epoch.
* :func:`evaluate_layerwise` -- every node, by layer-wise inference over mini-batches
  (PyG's ``BasicGNN.inference`` pattern): layer ``l`` is computed for all nodes,
  a batch of target nodes at a time from their 1-hop neighbourhood, before layer
  ``l + 1`` starts.  No device ever holds the whole graph; intermediate
  embeddings live on the host.  Ranks split the target nodes and run the same
  number of batches, so ZeRO-3's parameter gathers stay in step.
* :func:`evaluate_full_graph` -- one forward over the whole graph on every rank
  (exact, for graphs that fit), and :func:`evaluate_clusters` -- forwards over
  METIS clusters, 16 a batch (approximate: edges between batches are dropped);
  also used for models whose normalisation is not node-local.

The caller passes the method (:data:`EVAL_METHODS`); :func:`evaluate` dispatches
and stamps each split's metrics with the method that produced them.

Metrics (accuracy, micro/macro F1, per-class accuracy) come from a confusion
matrix summed over ranks; scikit-learn cannot take a distributed confusion
matrix, hence :func:`metrics_from_confusion`.
"""
from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..data.datasets import GraphDataset
from ..data.loaders import with_node_fields
from ..data.sharding import shard_batches
from ..errors import GnnZeroError
from ..models import forward_batch
from ..utils.dist import all_gather_tensor, all_reduce_tensor, rank_world
from .batches import prepare_batch

# Above this many nodes, evaluation runs over METIS clusters instead of the whole graph.
FULL_GRAPH_EVAL_MAX_NODES = 500_000
SPLITS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}
LAYERWISE_BATCH = 4096
EVAL_METHODS = ("full-graph", "clusters", "layerwise", "sampled")
# The last dataset's whole-graph batch.  Keyed by a weak reference, not id(): a freed
# dataset's id is reused by the next one (e.g. runs in one process), which served the
# previous run's features.
_full_graph_cache: dict[str, object] = {}


# --------------------------------------------------------------------------- metrics

def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """``[C, C]`` int64 counts, rows = true class, columns = predicted class."""
    index = y_true.long().view(-1) * num_classes + y_pred.long().view(-1)
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def metrics_from_confusion(conf: Tensor) -> dict:
    """Accuracy, micro/macro F1 and per-class accuracy (recall) from a confusion matrix.

    Macro F1 averages over the classes that occur in the labels or the
    predictions, as scikit-learn's ``f1_score(average="macro")`` does; a class
    without support has per-class accuracy ``None``.
    """
    conf = conf.double()
    total = float(conf.sum())
    tp = conf.diag()
    support, predicted = conf.sum(1), conf.sum(0)
    present = (support + predicted) > 0
    f1 = torch.where(present, 2 * tp / (support + predicted).clamp(min=1), torch.zeros_like(tp))
    correct = float(tp.sum())
    accuracy = correct / total if total else 0.0
    return {"accuracy": accuracy, "correct": int(correct), "total": int(total),
            "micro_f1": accuracy,  # single-label: micro precision = micro recall = accuracy
            "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
            "per_class_accuracy": [float(t / s) if s > 0 else None
                                   for t, s in zip(tp.tolist(), support.tolist())]}


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (scipy's ``binomtest(...).proportion_ci``)."""
    from scipy.stats import binomtest

    if total <= 0:
        return 0.0, 1.0
    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence,
                                                           method="wilson")
    return float(ci.low), float(ci.high)


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
def _global_gcn_normalisation(gnn) -> Iterator[bool]:
    """Switch GCN's own normalisation off while edges carry the whole graph's GCN weights.

    GCN's weight ``1/sqrt(d_u d_v)`` needs the degree of the *source* node ``u``,
    which a sampled subgraph does not contain; the weights are therefore taken
    from :func:`_inference_structure` (whole-graph degrees, self-loops included).
    """
    convs = _gcn_convs(gnn)
    for conv in convs:
        conv.normalize = False
    try:
        yield bool(convs)
    finally:
        for conv in convs:
            conv.normalize = True


def _inference_structure(dataset: GraphDataset, gnn, gcn: bool):
    """Structure for neighbour sampling, with the edge weights the model would derive itself.

    GCN: whole-graph normalised weights (see :func:`_global_gcn_normalisation`).
    Models that rebuild the graph (PinSAGE's ``importance_graph``, random-walk
    neighbourhoods): that graph, built once from the whole structure.
    """
    data = dataset.structure()
    if hasattr(gnn, "importance_graph"):
        data.edge_index, data.edge_weight = gnn.importance_graph(data.edge_index, data.num_nodes)
    if gcn:
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        edge_index, weight = gcn_norm(data.edge_index, getattr(data, "edge_weight", None),
                                      dataset.num_nodes, add_self_loops=True,
                                      dtype=torch.float32)
        data.edge_index, data.edge_weight = edge_index, weight
    return data


def _neighbor_loader(structure, num_neighbors: list[int], batches: list[list[int]]):
    from torch_geometric.loader import NeighborLoader

    from ..data.loaders import _require_torch_sparse

    _require_torch_sparse("evaluation with NeighborLoader")
    return NeighborLoader(structure, num_neighbors=num_neighbors, batch_sampler=batches)


def _equal_batches(nodes: Tensor, num_batches: int, filler: int) -> list[tuple[list[int], int]]:
    """``num_batches`` near-equal pieces of ``nodes``; an empty piece becomes ``[filler]``
    (computed and discarded) so every rank runs the same number of forwards."""
    pieces = np.array_split(nodes.numpy(), num_batches) if num_batches else []
    return [(p.tolist(), len(p)) if len(p) else ([filler], 0) for p in pieces]


def _gather_rows(local: Tensor, counts: list[int], device: torch.device) -> Tensor:
    """All ranks' row blocks (rank order), each padded to the largest for ``all_gather``."""
    if rank_world()[1] == 1:
        return local
    padded = torch.zeros(max(counts), *local.shape[1:], dtype=local.dtype)
    padded[:local.size(0)] = local
    out = all_gather_tensor(padded, device)
    return torch.cat([o[:c] for o, c in zip(out, counts)])


# ---------------------------------------------------------------- layer-wise inference

@dataclass
class InferenceOutput:
    """Logits (and optionally the last hidden representation) of the nodes ``node_ids``."""

    node_ids: Tensor
    logits: Tensor
    hidden: Optional[Tensor] = None


def _post_conv(gnn, layer: int, x: Tensor) -> Tensor:
    """What ``BasicGNN.forward`` does after conv ``layer`` (eval mode: no dropout)."""
    if layer == gnn.num_layers - 1 and gnn.jk_mode is None:
        return x
    if gnn.act is not None and gnn.act_first:
        x = gnn.act(x)
    x = gnn.norms[layer](x)
    if gnn.act is not None and not gnn.act_first:
        x = gnn.act(x)
    return x


@torch.no_grad()
def layerwise_inference(model, dataset: GraphDataset, device: torch.device,
                        dtype: torch.dtype = torch.float32, batch_size: int = LAYERWISE_BATCH,
                        return_hidden: bool = False, show: bool = False) -> InferenceOutput:
    """Logits of this rank's share of the nodes, one layer at a time over 1-hop mini-batches.

    ``model`` is a ``BasicGNN`` or a DeepSpeed engine wrapping one.  Every rank
    must call this together (embeddings are exchanged after each layer).  With
    ``return_hidden`` the input of the classifier (last conv's input, or the
    jumping-knowledge output) is returned too.
    """
    reason = layerwise_unsupported_reason(model)
    if reason:
        raise GnnZeroError(f"exact layer-wise evaluation is not possible: {reason}")
    gnn = _module(model)
    rank, world = rank_world()
    n = dataset.num_nodes
    bounds = [n * r // world for r in range(world + 1)]
    counts = [bounds[r + 1] - bounds[r] for r in range(world)]
    mine = torch.arange(bounds[rank], bounds[rank + 1])
    num_batches = math.ceil(max(counts) / batch_size)
    batches = _equal_batches(mine, num_batches, filler=0)
    was_training = gnn.training
    gnn.eval()
    layer_outputs: list[Tensor] = []  # this rank's rows of each layer (for jumping knowledge)
    with _global_gcn_normalisation(gnn) as gcn:
        structure = _inference_structure(dataset, gnn, gcn)
        # Re-iterated per layer instead of kept in a list: full 1-hop neighbourhoods are
        # deterministic, and holding every subgraph at once costs GBs on large graphs.
        subgraphs = _neighbor_loader(structure, [-1], [b for b, _ in batches])
        x_all: Optional[Tensor] = None
        hidden: Optional[Tensor] = None
        bar = tqdm(total=gnn.num_layers * len(batches), desc="layer-wise inference",
                   disable=not show, leave=False, dynamic_ncols=True)
        for layer in range(gnn.num_layers):
            if layer == gnn.num_layers - 1 and return_hidden and gnn.jk_mode is None:
                hidden = dataset.features.rows(mine) if x_all is None else x_all[mine]
            rows = []
            for sub, (_, keep) in zip(subgraphs, batches):
                x = (dataset.features.rows(sub.n_id) if x_all is None else x_all[sub.n_id])
                x = x.to(device=device, dtype=dtype)
                weight = sub.edge_weight.to(device) if "edge_weight" in sub else None
                out = gnn.convs[layer](x, sub.edge_index.to(device), weight)[:sub.batch_size]
                rows.append(_post_conv(gnn, layer, out).float().cpu()[:keep])
                bar.update(1)
            local = torch.cat(rows)
            layer_outputs.append(local)
            if layer < gnn.num_layers - 1:
                x_all = _gather_rows(local, counts, device)
        bar.close()
    logits = layer_outputs[-1]
    if gnn.jk_mode is not None:  # jumping knowledge + classifier, batch by batch
        logit_rows, hidden_rows, start = [], [], 0
        for _, keep in batches:  # the same number of ``lin`` calls on every rank (ZeRO-3)
            rows = slice(start, start + keep) if keep else slice(0, 1)
            combined = gnn.jk([h[rows].to(device=device, dtype=dtype) for h in layer_outputs])
            logit_rows.append(gnn.lin(combined).float().cpu()[:keep])
            hidden_rows.append(combined.float().cpu()[:keep])
            start += keep
        logits = torch.cat(logit_rows)
        hidden = torch.cat(hidden_rows) if return_hidden else None
    gnn.train(was_training)
    return InferenceOutput(mine, logits, hidden.float() if hidden is not None else None)


def _split_metrics(conf: Tensor) -> dict[str, dict]:
    return {split: metrics_from_confusion(conf[i]) for i, split in enumerate(SPLITS)}


@torch.no_grad()
def evaluate_layerwise(model, dataset: GraphDataset, device: torch.device,
                   dtype: torch.dtype = torch.float32, batch_size: int = LAYERWISE_BATCH,
                   show: bool = False) -> dict[str, dict]:
    """Exact metrics per split over every node, by :func:`layerwise_inference`; same on all ranks."""
    out = layerwise_inference(model, dataset, device, dtype, batch_size, show=show)
    pred = out.logits.argmax(dim=-1)
    y = dataset.y[out.node_ids]
    c = dataset.num_classes
    conf = torch.stack([confusion_matrix(y[m], pred[m], c) for m in
                        (dataset.masks[name][out.node_ids] for name in SPLITS.values())])
    return _split_metrics(all_reduce_tensor(conf, device))


# ------------------------------------------------------------------ sampled evaluation

@torch.no_grad()
def evaluate_sampled(engine, dataset: GraphDataset, num_nodes: int, device: torch.device,
                     dtype: torch.dtype = torch.float32, split: str = "val", seed: int = 0,
                     epoch: int = 0, batch_size: int = 512, confidence: float = 0.95) -> dict:
    """Accuracy on ``num_nodes`` random nodes of ``split`` with a Wilson interval.

    Every sampled node is predicted from its full ``num_layers``-hop neighbourhood
    (fan-out -1), so its prediction is the exact one.  All ranks draw the same
    sample (seeded by ``seed`` and ``epoch``) and predict disjoint shares of it.
    """
    if split not in SPLITS:
        raise GnnZeroError(f"split '{split}' is unknown; choose one of {', '.join(SPLITS)}")
    if num_nodes <= 0:
        raise GnnZeroError(f"--sampled-eval-nodes must be positive to sample, got {num_nodes}")
    gnn = _module(engine)
    rank, world = rank_world()
    population = dataset.masks[SPLITS[split]].nonzero().view(-1)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    sample = population[torch.randperm(population.numel(), generator=generator)[:num_nodes]]
    mine = sample[rank::world]
    per_rank = math.ceil(sample.numel() / world)
    batches = _equal_batches(mine, math.ceil(per_rank / batch_size), filler=int(sample[0]))
    was_training = gnn.training
    engine.eval()
    correct = torch.zeros(2, dtype=torch.float64)
    with _global_gcn_normalisation(gnn) as gcn:
        structure = _inference_structure(dataset, gnn, gcn)
        loader = _neighbor_loader(structure, [-1] * gnn.num_layers, [b for b, _ in batches])
        for sub, (_, keep) in zip(loader, batches):
            sub = prepare_batch(with_node_fields(sub, dataset), device, dtype)
            pred = forward_batch(engine, sub)[:keep].argmax(dim=-1).cpu()
            correct[0] += float((pred == sub.y[:keep].cpu()).sum())
            correct[1] += keep
    correct = all_reduce_tensor(correct, device)
    engine.train(was_training)
    hits, total = int(correct[0]), int(correct[1])
    low, high = wilson_interval(hits, total, confidence)
    return {"split": split, "accuracy": hits / max(total, 1), "correct": hits, "total": total,
            "ci_low": low, "ci_high": high, "confidence": confidence,
            "population": int(population.numel())}


# ------------------------------------------------- whole-graph / cluster evaluation

def _full_graph(dataset: GraphDataset):
    owner = _full_graph_cache.get("dataset")
    if owner is None or owner() is not dataset:
        _full_graph_cache["graph"] = with_node_fields(dataset.structure(), dataset)
        _full_graph_cache["dataset"] = weakref.ref(dataset)
    return _full_graph_cache["graph"]


def _full_graph_batches(dataset: GraphDataset, rank: int, world: int) -> Iterator:
    """The whole graph on every rank; node ``v`` counted on rank ``v % world``."""
    batch = _full_graph(dataset).clone()
    batch.count_mask = batch.n_id % world == rank
    yield batch


def _cluster_batches(dataset: GraphDataset, cluster_data, rank: int, world: int) -> Iterator:
    """This rank's share of all METIS clusters, 16 a batch (inter-cluster edges inside a
    batch are kept, those between batches dropped); every node counted once."""
    from torch_geometric.loader import ClusterLoader

    groups = shard_batches(len(cluster_data), world, rank, 16, epoch=0, seed=0, shuffle=False)
    for batch in ClusterLoader(cluster_data, batch_sampler=[g.tolist() for g in groups]):
        batch = with_node_fields(batch, dataset)
        batch.count_mask = torch.ones(batch.num_nodes, dtype=torch.bool)
        yield batch


@torch.no_grad()
def _evaluate_batches(model, dataset: GraphDataset, batches: Iterator, device: torch.device,
                      dtype: torch.dtype) -> dict[str, dict]:
    """Metrics per split from forwards over ``batches`` (each with a ``count_mask``)."""
    model.eval()
    c = dataset.num_classes
    conf = torch.zeros(len(SPLITS), c, c, dtype=torch.int64)
    for batch in batches:
        batch = prepare_batch(batch, device, dtype)
        pred = forward_batch(model, batch).argmax(dim=-1).cpu()
        y, count = batch.y.cpu(), batch.count_mask.cpu()
        for i, mask_name in enumerate(SPLITS.values()):
            mask = batch[mask_name].cpu() & count
            conf[i] += confusion_matrix(y[mask], pred[mask], c)
    model.train()
    return _split_metrics(all_reduce_tensor(conf, device))


def evaluate_full_graph(model, dataset: GraphDataset, device: torch.device,
                        dtype: torch.dtype = torch.float32) -> dict[str, dict]:
    """Exact metrics per split from one whole-graph forward per rank; same on all ranks."""
    rank, world = rank_world()
    return _evaluate_batches(model, dataset, _full_graph_batches(dataset, rank, world), device,
                             dtype)


def evaluate_clusters(model, dataset: GraphDataset, cluster_data, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> dict[str, dict]:
    """Metrics per split over METIS clusters (``cluster_data``); same on all ranks."""
    rank, world = rank_world()
    return _evaluate_batches(model, dataset, _cluster_batches(dataset, cluster_data, rank, world),
                             device, dtype)


def auto_eval_method(num_nodes: int, cluster_data, sampled_nodes: int = 0) -> str:
    """Per-epoch validation when none is asked for: sampled with a node budget, else the
    whole graph, or METIS clusters for a graph above FULL_GRAPH_EVAL_MAX_NODES when the
    training batches come with clusters."""
    if sampled_nodes:
        return "sampled"
    if num_nodes > FULL_GRAPH_EVAL_MAX_NODES and cluster_data is not None:
        return "clusters"
    return "full-graph"


def final_eval_method(model, num_nodes: int, cluster_data) -> tuple[str, Optional[str]]:
    """The final evaluation's method: exact layer-wise when the model allows it, else
    :func:`auto_eval_method`; with the reason layer-wise was not possible."""
    import torch_geometric.typing as pyg_typing

    reason = layerwise_unsupported_reason(model)
    if not (pyg_typing.WITH_TORCH_SPARSE or pyg_typing.WITH_PYG_LIB):
        reason = "NeighborLoader needs torch-sparse or pyg-lib"
    return ("layerwise", None) if reason is None else \
        (auto_eval_method(num_nodes, cluster_data), reason)


def evaluate(method: str, model, dataset: GraphDataset, device: torch.device,
             dtype: torch.dtype = torch.float32, *, cluster_data=None, show: bool = False
             ) -> dict[str, dict]:
    """Metrics per split by ``method`` (full-graph, clusters or layerwise), each labelled."""
    if method == "layerwise":
        result = evaluate_layerwise(model, dataset, device, dtype, show=show)
    elif method == "full-graph":
        result = evaluate_full_graph(model, dataset, device, dtype)
    elif method == "clusters":
        if cluster_data is None:
            raise GnnZeroError("--eval-method clusters needs METIS clusters: train with "
                               "--loader cluster or choose another --eval-method")
        result = evaluate_clusters(model, dataset, cluster_data, device, dtype)
    else:
        raise GnnZeroError(f"evaluation method '{method}' is unknown; choose one of "
                           f"{', '.join(EVAL_METHODS)}")
    for split in result.values():
        split["method"] = method
    return result
