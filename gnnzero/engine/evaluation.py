"""Node-classification evaluation: sampled (with a confidence interval) and exact layer-wise.

* :func:`evaluate_sampled` -- a random subset of one split's nodes, each predicted
  from its full k-hop neighbourhood (PyG ``NeighborLoader``'s batches at fan-out -1, read
  from the mapped CSR), so every sampled prediction equals the exact one and the only
  error is which nodes were drawn; reported with a Wilson interval.  Cheap enough for
  every epoch.
* :func:`evaluate_layerwise` -- every node, exactly, by :mod:`.layerwise` inference:
  one layer at a time, each rank writing its rows into a shared memory-mapped
  scratch array; no device or rank ever holds the whole graph or an ``N x hidden``
  tensor.
* :func:`evaluate_full_graph` -- one forward over the whole graph on every rank
  (exact, for graphs that fit), and :func:`evaluate_clusters` -- forwards over
  METIS clusters, 16 a batch (approximate: edges between batches are dropped);
  also used for models whose normalisation is not node-local.

The caller passes the method (:data:`EVAL_METHODS`); :func:`evaluate` dispatches
and stamps each split's metrics with the method that produced them.

Metrics (accuracy, micro/macro F1, per-class accuracy) come from a confusion
matrix summed over ranks; scikit-learn cannot take a distributed confusion
matrix, hence :func:`metrics_from_confusion`.  The final evaluation adds the
validation and test nodes' one-vs-rest macro ROC-AUC from their class
probabilities, gathered over ranks (:class:`SplitTally`).
"""
from __future__ import annotations

import math
import weakref
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..data.datasets import GraphDataset
from ..data.loaders import with_node_fields
from ..data.sharding import shard_batches
from ..errors import GnnZeroError
from ..models import forward_batch
from ..utils.dist import all_reduce_tensor, gather_objects, rank_world
from ..utils.stats import macro_ovr_auc, macro_ovr_auc_of_logits
from .batches import labelled_store, prepare_batch
from .layerwise import (LAYERWISE_BATCH, InferenceGraph, InferenceOutput,  # noqa: F401
                        _module, global_gcn_normalisation, layerwise_inference,
                        layerwise_unsupported_reason, post_conv)

# Up to this many nodes, per-epoch validation is one whole-graph forward; above it, it is
# exact layer-wise (bounded memory), or METIS clusters for models layer-wise cannot run.
FULL_GRAPH_EVAL_MAX_NODES = 100_000
SPLITS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}
EVAL_METHODS = ("full-graph", "clusters", "layerwise", "sampled")
# The last datasets' whole-graph batches.  Keyed by a weak reference, not id(): a freed
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


# ---------------------------------------------------------- sampled-evaluation graph

def neighbourhood_batches(gnn, dataset: GraphDataset, batches: list[tuple[list[int], int]],
                          device: torch.device, dtype: torch.dtype) -> Iterator[tuple]:
    """``(batch, keep)`` per ``(seeds, keep)``: the seeds (first) with their full
    ``num_layers``-hop neighbourhood, so their predictions equal the exact ones."""
    with global_gcn_normalisation(gnn) as gcn:
        graph = InferenceGraph.of(dataset, gnn, gcn)
        for seeds, keep in batches:
            sub = graph.neighbourhood(np.asarray(seeds, dtype=np.int64), gnn.num_layers)
            yield prepare_batch(with_node_fields(sub, dataset), device, dtype), keep


def _equal_batches(nodes: Tensor, num_batches: int, filler: int) -> list[tuple[list[int], int]]:
    """``num_batches`` near-equal pieces of ``nodes``; an empty piece becomes ``[filler]``
    (computed and discarded) so every rank runs the same number of forwards."""
    pieces = np.array_split(nodes.numpy(), num_batches) if num_batches else []
    return [(p.tolist(), len(p)) if len(p) else ([filler], 0) for p in pieces]


class SplitTally:
    """Per split: the confusion matrix summed over ranks and, with ``roc_auc``, the class
    probabilities of the validation and test nodes (gathered, for the one-vs-rest ROC-AUC)."""

    SCORED = ("val", "test")

    def __init__(self, num_classes: int, roc_auc: bool = False) -> None:
        self.num_classes, self.roc_auc = num_classes, roc_auc
        self.conf = torch.zeros(len(SPLITS), num_classes, num_classes, dtype=torch.int64)
        self.scores: dict[str, list] = {split: [] for split in self.SCORED}

    def add(self, logits: Tensor, y: Tensor, masks: dict[str, Tensor]) -> None:
        """Rows ``logits`` (CPU) of nodes with labels ``y``; ``masks`` by mask name."""
        pred = logits.argmax(dim=-1)
        for i, (split, name) in enumerate(SPLITS.items()):
            mask = masks[name]
            self.conf[i] += confusion_matrix(y[mask], pred[mask], self.num_classes)
            if self.roc_auc and split in self.SCORED and bool(mask.any()):
                self.scores[split].append((y[mask], logits[mask].float().softmax(dim=-1)))

    def metrics(self) -> dict[str, dict]:
        """Every split's metrics, the same on all ranks (an all-reduce; a gather with AUC)."""
        conf = all_reduce_tensor(self.conf)
        out = {split: metrics_from_confusion(conf[i]) for i, split in enumerate(SPLITS)}
        if self.roc_auc:
            gathered = gather_objects(self.scores)       # one dict per rank
            for split in self.SCORED:
                parts = [part for scores in gathered for part in scores[split]]
                if parts:
                    out[split]["roc_auc_macro_ovr"] = macro_ovr_auc(
                        torch.cat([y for y, _ in parts]).numpy(),
                        torch.cat([p for _, p in parts]).numpy())
        return out


@torch.no_grad()
def evaluate_layerwise(model, dataset: GraphDataset, device: torch.device,
                       dtype: torch.dtype = torch.float32, batch_size: int = LAYERWISE_BATCH,
                       show: bool = False, scratch_dir: Optional[str] = None,
                       rows_per_read: int = 1 << 16, roc_auc: bool = False) -> dict[str, dict]:
    """Exact metrics per split over every node, by :func:`layerwise_inference` (bounded
    memory: the logits are read from the scratch file a block at a time); same on all ranks."""
    out = layerwise_inference(model, dataset, device, dtype, batch_size, show=show,
                              scratch_dir=scratch_dir)
    tally = SplitTally(dataset.num_classes)
    for start in range(0, out.node_ids.numel(), rows_per_read):
        ids = out.node_ids[start:start + rows_per_read]
        tally.add(torch.as_tensor(out.logits[start:start + rows_per_read]), dataset.y[ids],
                  {name: mask[ids] for name, mask in dataset.masks.items()})
    metrics = tally.metrics()
    if roc_auc:   # from the shared logits file, on rank 0: no split x classes array gathered
        rank, _ = rank_world()
        scores = None
        if rank == 0:
            scores = {}
            for split in SplitTally.SCORED:
                rows = dataset.masks[SPLITS[split]].nonzero().view(-1).numpy()
                if rows.size:
                    scores[split] = macro_ovr_auc_of_logits(dataset.y[rows].numpy(),
                                                            out.all_logits, rows)
        for split, value in gather_objects(scores)[0].items():
            metrics[split]["roc_auc_macro_ovr"] = value
    return metrics


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
    for sub, keep in neighbourhood_batches(gnn, dataset, batches, device, dtype):
        pred = forward_batch(engine, sub)[:keep].argmax(dim=-1).cpu()
        correct[0] += float((pred == sub.y[:keep].cpu()).sum())
        correct[1] += keep
    correct = all_reduce_tensor(correct)
    engine.train(was_training)
    hits, total = int(correct[0]), int(correct[1])
    low, high = wilson_interval(hits, total, confidence)
    return {"split": split, "accuracy": hits / max(total, 1), "correct": hits, "total": total,
            "ci_low": low, "ci_high": high, "confidence": confidence,
            "population": int(population.numel())}


# ------------------------------------------------- whole-graph / cluster evaluation

def _full_graph(dataset: GraphDataset):
    """The whole-graph batch of ``dataset``, built once; the last two datasets' are kept
    (link prediction scores validation and test edges on two graphs every epoch)."""
    for owner, graph in _full_graph_cache.get("entries", []):
        if owner() is dataset:
            return graph
    graph = with_node_fields(dataset.structure(), dataset)
    entries = [e for e in _full_graph_cache.get("entries", []) if e[0]() is not None]
    _full_graph_cache["entries"] = [*entries[-1:], (weakref.ref(dataset), graph)]
    return graph


def _full_graph_batches(dataset: GraphDataset, rank: int, world: int) -> Iterator:
    """The whole graph on every rank; node ``v`` counted on rank ``v % world``."""
    batch = _full_graph(dataset).clone()
    batch.count_mask = batch.n_id % world == rank
    yield batch


def _cluster_batches(dataset: GraphDataset, partition, rank: int, world: int) -> Iterator:
    """This rank's share of all METIS clusters, 16 a batch (inter-cluster edges inside a
    batch are kept, those between batches dropped); every node counted once."""
    groups = shard_batches(len(partition), world, rank, 16, epoch=0, seed=0, shuffle=False)
    for group in groups:
        batch = with_node_fields(partition.batch(dataset.topology, group), dataset)
        batch.count_mask = torch.ones(batch.num_nodes, dtype=torch.bool)
        yield batch


@torch.no_grad()
def _evaluate_batches(model, dataset: GraphDataset, batches: Iterator, device: torch.device,
                      dtype: torch.dtype, roc_auc: bool = False) -> dict[str, dict]:
    """Metrics per split from forwards over ``batches`` (each with a ``count_mask``)."""
    was_training = _module(model).training
    model.eval()
    tally = SplitTally(dataset.num_classes, roc_auc)
    for batch in batches:
        batch = prepare_batch(batch, device, dtype)
        logits, store = forward_batch(model, batch).cpu(), labelled_store(batch)
        count = store.count_mask.cpu()
        tally.add(logits, store.y.cpu(),
                  {name: store[name].cpu() & count for name in SPLITS.values()})
    model.train(was_training)
    return tally.metrics()


def evaluate_full_graph(model, dataset: GraphDataset, device: torch.device,
                        dtype: torch.dtype = torch.float32, roc_auc: bool = False
                        ) -> dict[str, dict]:
    """Exact metrics per split from one whole-graph forward per rank; same on all ranks."""
    rank, world = rank_world()
    return _evaluate_batches(model, dataset, _full_graph_batches(dataset, rank, world), device,
                             dtype, roc_auc)


def evaluate_clusters(model, dataset: GraphDataset, partition, device: torch.device,
                      dtype: torch.dtype = torch.float32, roc_auc: bool = False
                      ) -> dict[str, dict]:
    """Metrics per split over METIS clusters (a :class:`~gnnzero.data.partition.Partition`);
    same on all ranks."""
    rank, world = rank_world()
    return _evaluate_batches(model, dataset, _cluster_batches(dataset, partition, rank, world),
                             device, dtype, roc_auc)


def per_epoch_rule(model, dataset, evaluation, *, above: Optional[tuple[str, str]] = None,
                   covers: str = "every node") -> tuple[str, str]:
    """Per-epoch validation's method for ``--eval-method`` (``auto``: :func:`auto_eval_method`,
    with ``above`` as its large-graph method) and the line that states the rule once at start;
    ``covers`` names what the final evaluation scores."""
    method, why = evaluation.eval_method, "asked for"
    if method == "auto":
        method, why = auto_eval_method(model, dataset.num_nodes, evaluation.sampled_eval_nodes,
                                       above=above)
    large = (f"above that {above[1]}" if above else
             "above that exact layer-wise, else METIS clusters")
    return method, (f"per-epoch validation: {method} ({why}; --eval-method "
                    f"{evaluation.eval_method}: the whole graph up to "
                    f"{FULL_GRAPH_EVAL_MAX_NODES} nodes, {large}); the final evaluation "
                    f"covers {covers}")


def auto_eval_method(model, num_nodes: int, sampled_nodes: int = 0, *,
                     above: Optional[tuple[str, str]] = None) -> tuple[str, str]:
    """Per-epoch validation when none is asked for, and why: sampled with a node budget; the
    whole graph up to FULL_GRAPH_EVAL_MAX_NODES nodes; above, ``above``'s method when given,
    else exact layer-wise when the model allows it, else METIS clusters -- never the whole
    graph on a device."""
    if sampled_nodes:
        return "sampled", f"--sampled-eval-nodes {sampled_nodes}"
    if num_nodes <= FULL_GRAPH_EVAL_MAX_NODES:
        return "full-graph", f"{num_nodes} nodes <= {FULL_GRAPH_EVAL_MAX_NODES}"
    if above is not None:
        return above[0], f"{num_nodes} nodes > {FULL_GRAPH_EVAL_MAX_NODES}: {above[1]}"
    reason = layerwise_unsupported_reason(model)
    if reason is None:
        return "layerwise", (f"{num_nodes} nodes > {FULL_GRAPH_EVAL_MAX_NODES}: exact, "
                             f"one layer at a time through a mapped scratch array")
    return "clusters", f"{num_nodes} nodes > {FULL_GRAPH_EVAL_MAX_NODES} and {reason}"


def final_eval_method(model, num_nodes: int) -> tuple[str, Optional[str]]:
    """The final evaluation's method: exact layer-wise when the model allows it, else
    :func:`auto_eval_method`; with the reason layer-wise was not possible."""
    reason = layerwise_unsupported_reason(model)
    return ("layerwise", None) if reason is None else \
        (auto_eval_method(model, num_nodes)[0], reason)


def evaluate(method: str, model, dataset: GraphDataset, device: torch.device,
             dtype: torch.dtype = torch.float32, *, partition=None,
             scratch_dir: Optional[str] = None, cache_dir: Optional[str] = None,
             batch_size: int = LAYERWISE_BATCH, show: bool = False,
             roc_auc: bool = False) -> dict[str, dict]:
    """Metrics per split by ``method`` (full-graph, clusters or layerwise), each labelled;
    with ``roc_auc``, also the validation and test nodes' one-vs-rest macro ROC-AUC.

    ``clusters`` uses ``partition`` (the training loader's) or partitions the graph
    into ``cache_dir`` / the prepared directory first."""
    if method == "layerwise":
        result = evaluate_layerwise(model, dataset, device, dtype, batch_size, show=show,
                                    scratch_dir=scratch_dir, roc_auc=roc_auc)
    elif method == "full-graph":
        result = evaluate_full_graph(model, dataset, device, dtype, roc_auc)
    elif method == "clusters":
        result = evaluate_clusters(model, dataset, partition or eval_partition(dataset, cache_dir),
                                   device, dtype, roc_auc)
    else:
        raise GnnZeroError(f"evaluation method '{method}' is unknown; choose one of "
                           f"{', '.join(EVAL_METHODS)}")
    for split in result.values():
        split["method"] = method
    return result


def eval_partition(dataset: GraphDataset, cache_dir: Optional[str]):
    """A partition of about 500 nodes a part for cluster evaluation (cached like training's)."""
    from ..data.partition import load_partition, partitions_folder

    folder = partitions_folder(dataset, cache_dir)
    if folder is None:
        raise GnnZeroError("--eval-method clusters without --loader cluster partitions the graph "
                           "into --cache-dir; give one")
    return load_partition(dataset.topology, max(2, dataset.num_nodes // 500), folder)
