"""Moving a graph batch to the device in the compute dtype, and the node-classification loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

# Normalisation weights stay fp32: node weights multiply the fp32 loss, and edge weights
# scale messages inside our convs, which aggregate in fp32 (bf16 would round a
# GraphSAINT edge norm to 3 significant digits).
KEEP_FP32 = {"loss_weight", "node_norm", "edge_norm", "edge_weight", "edge_label"}


def prepare_batch(batch, device: torch.device, dtype: torch.dtype, non_blocking: bool = False):
    """Move a PyG ``Data``/``HeteroData`` to ``device`` and cast its floating tensors to ``dtype``.

    Without this, a bf16/fp16 engine fed fp32 features fails with "expected
    scalar type Float but found BFloat16" — the most reported DeepSpeed + PyG error.
    ``non_blocking`` (for a CUDA side stream) copies from pinned host memory.
    """
    if non_blocking and device.type == "cuda":   # sparse x: copied as is (not pinned)
        batch = batch.apply(lambda t: t.pin_memory() if t.layout == torch.strided else t)
        batch = batch.to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    for store in batch.stores:
        for key, value in store.items():
            if isinstance(value, Tensor) and value.is_floating_point() and key not in KEEP_FP32:
                store[key] = value.to(dtype)
    return batch


def labelled_store(batch):
    """Where a batch keeps its labels and masks: the batch itself, or a heterogeneous batch's
    target node type (``batch.target_type``, set by the loader)."""
    return batch[batch.target_type] if isinstance(batch, HeteroData) else batch


def node_loss(logits: Tensor, batch) -> Tensor:
    """Cross-entropy over ``batch.loss_mask`` (fp32), GraphSAINT-normalised when weights are given.

    With ``loss_weight`` (GraphSAINT ``node_norm = samples / (count_v * N)``) the
    loss is ``sum_v node_norm_v * CE_v`` over the batch's training nodes, as in
    PyG's ``examples/graph_saint.py``: an unbiased estimate of
    ``sum_{v in train} CE_v / N`` over the whole graph, i.e. the full-graph mean
    training loss times the constant ``N_train / N``.  A batch without training nodes gives a zero loss that
    still touches every output, so every rank runs the same collectives.
    """
    batch = labelled_store(batch)
    mask = batch.loss_mask
    if not bool(mask.any()):
        return logits.float().sum() * 0.0
    losses = F.cross_entropy(logits[mask].float(), batch.y[mask], reduction="none")
    weight = getattr(batch, "loss_weight", None)
    if weight is None:
        return losses.mean()
    return (losses * weight[mask].float()).sum()
