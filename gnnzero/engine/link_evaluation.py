"""Link-prediction evaluation: exact node embeddings of the scored pairs' endpoints, then
the decoder's pair scores, identical on every rank.

The embeddings come from the node evaluators' machinery (:mod:`.evaluation`):
one whole-graph forward, METIS clusters, exact layer-wise inference (bounded
memory) or the endpoints' full neighbourhoods (sampled evaluation).  Each rank
computes a disjoint share of the endpoints' rows and one all-reduce assembles
them; every rank then scores every pair (the same decoder calls on all ranks,
as ZeRO-3's parameter gathers need).
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..data.datasets import GraphDataset
from ..errors import GnnZeroError
from ..models import forward_batch
from ..models.link import encoder_of
from ..utils.dist import all_reduce_tensor, rank_world
from .batches import prepare_batch
from .evaluation import (_cluster_batches, _equal_batches, _full_graph_batches,
                         eval_partition, neighbourhood_batches)
from .layerwise import LAYERWISE_BATCH, layerwise_inference

SCORE_CHUNK = 1 << 16   # pairs per decoder call


class EndpointRows:
    """The rows of ``nodes`` (distinct global ids) in a ``[len(nodes), width]`` buffer."""

    def __init__(self, nodes: Tensor, num_nodes: int) -> None:
        self.nodes = nodes
        self.where = torch.full((num_nodes,), -1, dtype=torch.long)
        self.where[nodes] = torch.arange(nodes.numel())
        self.rows: Optional[Tensor] = None

    def put(self, ids: Tensor, values: Tensor) -> None:
        """Store the rows ``values`` of global ``ids`` that are endpoints."""
        if self.rows is None:
            self.rows = torch.zeros(self.nodes.numel(), values.size(1), dtype=torch.float32)
        at = self.where[ids]
        keep = at >= 0
        self.rows[at[keep]] = values[keep].float().cpu()

    def gathered(self) -> Tensor:
        """Every rank's rows (each row written on exactly one rank): one all-reduce."""
        return all_reduce_tensor(self.rows)

    def index(self, pairs: Tensor) -> Tensor:
        return self.where[pairs]


def _from_batches(engine, dataset: GraphDataset, batches: Iterator, rows: EndpointRows,
                  device: torch.device, dtype: torch.dtype) -> None:
    for batch in batches:
        batch = prepare_batch(batch, device, dtype)
        z = forward_batch(engine, batch)
        count = batch.count_mask
        rows.put(batch.n_id[count].cpu(), z[count])


def _from_layerwise(engine, dataset: GraphDataset, rows: EndpointRows, device, dtype,
                    batch_size: int, scratch_dir: Optional[str], show: bool) -> None:
    out = layerwise_inference(encoder_of(engine), dataset, device, dtype, batch_size,
                              show=show, scratch_dir=scratch_dir)
    lo = int(out.node_ids[0]) if out.node_ids.numel() else 0   # a contiguous range
    mine = rows.nodes[(rows.nodes >= lo) & (rows.nodes < lo + out.node_ids.numel())]
    rows.put(mine, out.logits[mine - lo])


def _from_neighbourhoods(engine, dataset: GraphDataset, rows: EndpointRows, device, dtype,
                         batch_size: int = 512) -> None:
    """Each endpoint from its full ``num_layers``-hop neighbourhood (fan-out -1): exact."""
    rank, world = rank_world()
    nodes = rows.nodes
    mine = nodes[rank::world]
    batches = _equal_batches(mine, math.ceil(math.ceil(nodes.numel() / world) / batch_size),
                             filler=int(nodes[0]))
    encoder = encoder_of(engine)
    for sub, keep in neighbourhood_batches(encoder, dataset, batches, device, dtype):
        rows.put(sub.n_id[:keep].cpu(), forward_batch(engine, sub)[:keep])


@torch.no_grad()
def endpoint_embeddings(method: str, engine, dataset: GraphDataset, nodes: Tensor,
                        device: torch.device, dtype: torch.dtype = torch.float32, *,
                        partition=None, cache_dir: Optional[str] = None,
                        scratch_dir: Optional[str] = None, batch_size: int = LAYERWISE_BATCH,
                        show: bool = False) -> EndpointRows:
    """The encoder's output rows of ``nodes`` (distinct ids) by ``method``, on every rank."""
    rank, world = rank_world()
    rows = EndpointRows(nodes, dataset.num_nodes)
    was_training = getattr(engine, "module", engine).training
    engine.eval()
    try:
        if method == "full-graph":
            _from_batches(engine, dataset, _full_graph_batches(dataset, rank, world), rows,
                          device, dtype)
        elif method == "clusters":
            part = partition or eval_partition(dataset, cache_dir)
            _from_batches(engine, dataset, _cluster_batches(dataset, part, rank, world), rows,
                          device, dtype)
        elif method == "layerwise":
            _from_layerwise(engine, dataset, rows, device, dtype, batch_size, scratch_dir, show)
        elif method == "sampled":
            _from_neighbourhoods(engine, dataset, rows, device, dtype)
        else:
            raise GnnZeroError(f"evaluation method '{method}' is unknown; choose one of "
                               f"full-graph, clusters, layerwise, sampled")
    finally:
        engine.train(was_training)
    rows.rows = rows.gathered()
    return rows


@torch.no_grad()
def score_pairs(engine, rows: EndpointRows, pairs: Tensor, device: torch.device,
                dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Decoder scores (logits) of global ``pairs`` ``[2, P]`` from the endpoints' rows: in fp32
    for a decoder without weights (a bf16 dot product would round scores into ties), else in
    the decoder's compute ``dtype``."""
    decoder = getattr(engine, "module", engine).decoder
    if next(decoder.parameters(), None) is None:
        dtype = torch.float32
    local = rows.index(pairs)
    if bool((local < 0).any()):
        raise ValueError("a pair's endpoint has no embedding row")
    out = []
    for start in range(0, max(local.size(1), 1), SCORE_CHUNK):
        chunk = local[:, start:start + SCORE_CHUNK]
        z_src = rows.rows[chunk[0]].to(device, dtype)
        z_dst = rows.rows[chunk[1]].to(device, dtype)
        out.append(decoder(z_src, z_dst).float().cpu())
    return torch.cat(out).numpy()
