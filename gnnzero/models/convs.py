"""Message-passing layers that are safe in bf16/fp16 and accept GraphSAINT edge weights.

PyG's convs aggregate in the input dtype.  In bf16 a sum over a node with
thousands of neighbours stalls (bf16 has 8 mantissa bits: 256 + 1 == 256), and
``gcn_norm`` builds its degree vector in ``x.dtype``, so GCN degrees saturate
at 256.  Here aggregation and normalisation run in fp32 and only the result is
cast back to the compute dtype.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import OptPairTensor, OptTensor  # noqa: F401  (read by propagate_type comments)
from torch_geometric.utils import scatter

from ..errors import GnnZeroError
from .sparse_input import (SPARSE_FIX, csr_tensor, is_sparse, mlp_after_first_linear,
                           require_linear_aggregation, sparse_product)

LOW_PRECISION = (torch.float16, torch.bfloat16)


class _GatherWithFp32Backward(torch.autograd.Function):
    """``src.index_select(dim, index)`` whose backward sums the per-edge gradients in fp32.

    The backward of a plain ``index_select`` is an ``index_add_`` in ``src.dtype``: in
    bf16 the gradient of a node with thousands of out-edges stalls exactly like a bf16
    forward sum.  Written by hand because torch has no gather with a wider accumulator.
    """

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, dim: int) -> Tensor:
        ctx.save_for_backward(index)
        ctx.dim, ctx.shape, ctx.dtype = dim, src.shape, src.dtype
        return src.index_select(dim, index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        total = grad.new_zeros(ctx.shape, dtype=torch.float32)
        total.index_add_(ctx.dim, index, grad.float())
        return total.to(ctx.dtype), None, None


class Fp32AggregationMixin:
    """Aggregate messages in fp32 when they arrive in fp16/bf16, and sum the gradients of
    the gathered ``x_j`` / ``x_i`` in fp32 on the way back; cast the results back."""

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Optional[Tensor] = None,
                  dim_size: Optional[int] = None) -> Tensor:
        if inputs.dtype in LOW_PRECISION:
            return super().aggregate(inputs.float(), index, ptr, dim_size).to(inputs.dtype)
        return super().aggregate(inputs, index, ptr, dim_size)

    def _index_select(self, src: Tensor, index: Tensor) -> Tensor:
        """PyG's gather of node rows onto edges (``_lift`` and the jinja ``collect``)."""
        if src.dtype in LOW_PRECISION and src.requires_grad and torch.is_grad_enabled():
            try:
                return _GatherWithFp32Backward.apply(src, index, self.node_dim)
            except (IndexError, RuntimeError):
                pass        # PyG's own gather names a bad edge_index; let it raise
        return super()._index_select(src, index)


def _edge_message(x_j: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
    if edge_weight is None:
        return x_j
    return (edge_weight.view(-1, 1).float() * x_j.float()).to(x_j.dtype)


_HOOKED = ("propagate", "message", "aggregate", "message_and_aggregate")


def _propagate_is_observed(conv: MessagePassing) -> bool:
    """Whether an explainer's edge mask or a propagate/message/aggregate hook needs PyG's
    per-edge ``propagate``."""
    return bool(conv.explain) or any(getattr(conv, f"_{name}_forward{pre}_hooks")
                                     for name in _HOOKED for pre in ("", "_pre"))


def weighted_neighbour_sum(edge_index: Tensor, edge_weight: Tensor, x: Tensor) -> Tensor:
    """``out_i = sum_(j->i) w_ji x_j`` over the edges ``j -> i``, as one sparse-dense product
    ``A @ x`` in fp32 (result in ``x.dtype``): no ``E x channels`` messages forward or back.

    Written by hand because PyG's own fused path (``spmm`` on a torch sparse adjacency)
    differentiates through torch's CPU CSR transposition, which is slow
    (:func:`~gnnzero.models.sparse_input.transposed_product` multiplies by the transpose in
    scipy instead).
    """
    num_nodes, weight = x.size(0), edge_weight.float()
    if x.device.type == "cpu":
        target, source = edge_index[1].numpy(), edge_index[0].numpy()
        adj = sp.csr_matrix((weight.detach().numpy(), (target, source)),
                            shape=(num_nodes, num_nodes))      # duplicates summed
        adj = csr_tensor(adj)
    else:
        adj = torch.sparse_coo_tensor(edge_index.flip(0), weight.detach(),
                                      (num_nodes, num_nodes)).coalesce().to_sparse_csr()
    return sparse_product(adj, x)


def gcn_normalised_adjacency(edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                             improved: bool = False, add_self_loops: bool = True) -> sp.csr_matrix:
    """PyG's ``gcn_norm`` as a float32 CSR ``A[target, source]``, duplicates summed: the
    remaining self-loops added (an existing loop keeps its weight, others get 1, or 2 when
    ``improved`` and edge weights are given: PyG's ``add_remaining_self_loops`` drops the fill
    value of an unweighted graph), in-degrees summed over targets, ``D^-1/2 A D^-1/2``.

    Written by hand because ``gcn_norm``'s torch scatters took a tenth of a Cluster-GCN step
    on CPU, where the CSR the neighbour sum needs is built anyway.
    """
    source, target = edge_index.numpy()
    weight = (np.ones(source.size, dtype=np.float32) if edge_weight is None
              else edge_weight.detach().float().numpy())
    if add_self_loops:
        loop = source == target
        fill = 2.0 if improved and edge_weight is not None else 1.0
        loop_weight = np.full(num_nodes, fill, dtype=np.float32)
        loop_weight[source[loop]] = weight[loop]
        nodes = np.arange(num_nodes, dtype=source.dtype)
        keep = ~loop
        source = np.concatenate([source[keep], nodes])
        target = np.concatenate([target[keep], nodes])
        weight = np.concatenate([weight[keep], loop_weight])
    adj = sp.csr_matrix((weight, (target, source)), shape=(num_nodes, num_nodes),
                        dtype=np.float32)
    rows = np.repeat(np.arange(num_nodes), np.diff(adj.indptr))
    degree = np.bincount(rows, weights=adj.data, minlength=num_nodes).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(degree > 0, degree, np.inf) ** -0.5
    adj.data *= inv_sqrt[rows] * inv_sqrt[adj.indices]
    return adj


class GCNConvFp32(Fp32AggregationMixin, GCNConv):
    """``GCNConv`` whose symmetric normalisation and aggregation run in fp32; the weighted
    neighbour sum is one sparse-dense product (:func:`weighted_neighbour_sum`) for a plain
    ``[2, E]`` edge_index, 2-D ``x`` and sum aggregation, unless an explainer or a hook
    watches the per-edge messages."""

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> Tensor:
        fused = (isinstance(edge_index, Tensor) and edge_index.layout == torch.strided
                 and x.dim() == 2 and str(self.aggr) in ("add", "sum")
                 and self.flow == "source_to_target" and not _propagate_is_observed(self)
                 and (edge_weight is None or not edge_weight.requires_grad))
        if fused and self.normalize and x.device.type == "cpu":
            adj = gcn_normalised_adjacency(edge_index, edge_weight, x.size(self.node_dim),
                                           self.improved, self.add_self_loops)
            out = sparse_product(csr_tensor(adj), self.lin(x))
        else:
            if self.normalize:
                if edge_weight is not None:
                    edge_weight = edge_weight.float()
                edge_index, edge_weight = gcn_norm(edge_index, edge_weight, x.size(self.node_dim),
                                                   self.improved, self.add_self_loops, self.flow,
                                                   torch.float32)
            x = self.lin(x)
            if fused:
                if edge_weight is None:
                    edge_weight = x.new_ones(edge_index.size(1), dtype=torch.float32)
                out = weighted_neighbour_sum(edge_index, edge_weight, x)
            else:
                out = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        if self.bias is not None:
            out = out + self.bias
        return out

    def message(self, x_j: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
        return _edge_message(x_j, edge_weight)


class SAGEConvWeighted(Fp32AggregationMixin, SAGEConv):
    """``SAGEConv`` whose mean aggregation becomes a weighted mean under ``edge_weight``.

    With GraphSAINT's ``edge_norm`` (1 / sampling probability of the edge
    relative to its target) the weighted mean ``sum w x / sum w`` is the
    self-normalised estimate of the full-graph neighbour mean; scaling a plain
    mean by raw ``edge_norm`` values (up to 1e4) would blow the activations up.
    """

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> Tensor:
        x = (x, x) if isinstance(x, Tensor) else x
        if edge_weight is not None and self.aggr == "mean":
            target = edge_index[1]
            num_targets = x[1].size(0) if x[1] is not None else x[0].size(0)
            mean_weight = scatter(edge_weight.float(), target, dim=0, dim_size=num_targets,
                                  reduce="mean")
            edge_weight = edge_weight.float() / mean_weight[target].clamp(min=1e-12)
        if is_sparse(x[0]):
            return self._forward_sparse(x, edge_index, edge_weight)
        if self.project and hasattr(self, "lin"):
            x = (self.lin(x[0]).relu(), x[1])
        # propagate_type: (x: OptPairTensor, edge_weight: OptTensor)
        out = self.lin_l(self.propagate(edge_index, x=x, edge_weight=edge_weight))
        if self.root_weight and x[1] is not None:
            out = out + self.lin_r(x[1])
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    def _forward_sparse(self, x: tuple, edge_index: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
        """First layer on sparse features: ``mean_j(x_j W_l) + b_l + W_r x_i`` (the mean of the
        projected rows: both maps are linear, so this equals ``W_l mean_j(x_j) + b_l``)."""
        require_linear_aggregation(self)
        if self.project:
            raise GnnZeroError(f"SAGEConv(project=True) cannot take sparse features; {SPARSE_FIX}")
        size = (x[0].size(0), x[1].size(0))
        out = self.lin_l(x[0], inner=lambda h: self.propagate(
            edge_index, x=(h, None), edge_weight=edge_weight, size=size))
        if self.root_weight:
            out = out + self.lin_r(x[1])
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    def message(self, x_j: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
        return _edge_message(x_j, edge_weight)


class GINConvWeighted(Fp32AggregationMixin, GINConv):
    """``GINConv`` with optional edge weights on the summed neighbour messages."""

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> Tensor:
        if is_sparse(x):
            return self._forward_sparse(x, edge_index, edge_weight)
        x = (x, x) if isinstance(x, Tensor) else x
        # propagate_type: (x: OptPairTensor, edge_weight: OptTensor)
        out = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        if x[1] is not None:
            out = out + (1 + self.eps) * x[1]
        return self.nn(out)

    def _forward_sparse(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
        """First layer on sparse features: the MLP's first map ``W`` moves inside the sum,
        ``sum_j x_j W + (1 + eps) x_i W + b``, then the rest of the MLP."""
        require_linear_aggregation(self)
        size = (x.size(0), x.size(0))

        def aggregate(h: Tensor) -> Tensor:
            return (self.propagate(edge_index, x=(h, None), edge_weight=edge_weight, size=size)
                    + (1 + self.eps) * h)
        return mlp_after_first_linear(self.nn, self.nn.lins[0](x, inner=aggregate))

    def message(self, x_j: Tensor, edge_weight: Optional[Tensor]) -> Tensor:
        return _edge_message(x_j, edge_weight)


class GATConvFp32(Fp32AggregationMixin, GATConv):
    """``GATConv`` whose attention softmax runs in fp32.

    ``edge_weight`` is accepted for a uniform interface and ignored: attention
    re-normalises over each neighbourhood, which would cancel per-edge
    GraphSAINT normalisation anyway.
    """

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None,
                edge_attr: Optional[Tensor] = None) -> Tensor:
        return super().forward(x, edge_index, edge_attr=edge_attr)

    def edge_update(self, alpha_j: Tensor, alpha_i: Optional[Tensor], edge_attr: Optional[Tensor],
                    index: Tensor, ptr: Optional[Tensor], dim_size: Optional[int]) -> Tensor:
        dtype = alpha_j.dtype
        alpha_i = None if alpha_i is None else alpha_i.float()
        return super().edge_update(alpha_j.float(), alpha_i, edge_attr, index, ptr,
                                   dim_size).to(dtype)


class PinSAGEConv(Fp32AggregationMixin, MessagePassing):
    """PinSAGE convolution (Ying et al., 2018) with importance-weighted aggregation.

    ``n_v = sum_u alpha_vu * relu(Q h_u + q)`` with ``alpha_vu = w_vu / sum_u' w_vu'``
    (``w`` = importance, e.g. random-walk visit counts; uniform without weights),
    then ``h_v' = normalize(relu(W [h_v || n_v] + b))``.  ``W [h || n]`` is written
    as ``lin_root(h) + lin_neigh(n)`` so both maps can be low-rank or shared.
    PyG has no PinSAGE layer, hence this one.
    """

    def __init__(self, in_channels: int, out_channels: int, normalize: bool = True,
                 output_layer: bool = False) -> None:
        super().__init__(aggr="sum")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.normalize, self.output_layer = normalize and not output_layer, output_layer
        self.lin_pool = torch.nn.Linear(in_channels, out_channels)
        self.lin_root = torch.nn.Linear(in_channels, out_channels)
        self.lin_neigh = torch.nn.Linear(out_channels, out_channels, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_pool, self.lin_root, self.lin_neigh):
            lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> Tensor:
        src, dst = edge_index
        weight = (torch.ones(src.numel(), device=x.device) if edge_weight is None
                  else edge_weight.float())
        total = scatter(weight, dst, dim=0, dim_size=x.size(0), reduce="sum")
        alpha = weight / total[dst].clamp(min=1e-12)
        pooled = self.lin_pool(x).relu()
        # propagate_type: (x: Tensor, alpha: Tensor)
        neigh = self.propagate(edge_index, x=pooled, alpha=alpha)
        out = self.lin_root(x) + self.lin_neigh(neigh)
        if self.output_layer:  # logits: no activation, no normalisation
            return out
        out = out.relu()
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return _edge_message(x_j, alpha)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
