"""Sparse feature batches consumed by the first layer without densifying them.

A batch whose ``x`` is a torch sparse tensor (CSR, as the loaders make it, or COO)
reaches the first convolution, whose linear maps multiply it with a sparse-dense
product (:func:`sparse_product`); every later layer sees dense activations as before.

* GCN, GAT and PinSAGE apply their linear maps to ``x`` first, so swapping those maps
  for sparse-aware ones (:func:`enable_sparse_input`) is all it takes.
* GraphSAGE (mean) and GIN (sum) aggregate ``x`` before their linear map.  Both the
  aggregation and the map are linear, so the first layer computes ``aggr(x W) + b``
  instead of ``aggr(x) W + b``: the linear map runs with an ``inner`` step between the
  product and the bias (:class:`SparseInputLinear`), inside the map's own forward so
  that ZeRO-3 has its weight and bias gathered.

In bf16/fp16 the sparse values arrive cast like every floating tensor of the batch;
the product itself runs in fp32 and its result is cast to the weight's dtype.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..errors import GnnZeroError

Inner = Optional[Callable[[Tensor], Tensor]]
SPARSE_FIX = "run with --feature-store dense (dense batches)"


def is_sparse(x) -> bool:
    """Whether ``x`` is a torch sparse tensor (any sparse layout)."""
    return isinstance(x, Tensor) and x.layout != torch.strided


def _as_csr(x: Tensor) -> Tensor:
    return x.to_sparse_csr() if x.layout != torch.sparse_csr else x


def _scipy_csr(x: Tensor) -> sp.csr_matrix:
    """A CPU sparse tensor's values and indices as a scipy CSR matrix (no copy for CSR)."""
    x = _as_csr(x)
    return sp.csr_matrix((x.values().numpy(), x.col_indices().numpy(), x.crow_indices().numpy()),
                         shape=tuple(x.shape))


def _int64_csr(x: Tensor) -> Tensor:
    """``x`` as CSR with int64 indices: torch's CPU CSR x dense product took 2.4x as long
    with int32 indices (4.4 against 1.8 ms on a Coauthor CS Cluster-GCN batch)."""
    x = _as_csr(x)
    if x.crow_indices().dtype == torch.int64:
        return x
    return torch.sparse_csr_tensor(x.crow_indices().long(), x.col_indices().long(), x.values(),
                                   x.shape)


def scipy_transposed_product(x: sp.csr_matrix, grad: np.ndarray) -> np.ndarray:
    """``x.T @ grad`` in scipy (numpy has no bf16: the operands are fp32 or wider)."""
    return x.T @ grad


def transposed_product(x: Tensor, grad: Tensor) -> Tensor:
    """``x.T @ grad`` for sparse ``x`` (fp32): the weight gradient of ``x @ W``.

    On CPU through scipy (``csr.T`` is a CSC view, multiplied without transposing): torch's
    CPU CSR -> CSC conversion, what ``sparse.mm``'s backward does, took 90-145 ms on Coauthor
    CS's 18k x 6.8k features, and even a pre-transposed torch product took 2.9 ms against
    scipy's 1.3 ms on a Cluster-GCN batch.
    """
    if x.device.type == "cpu" and x.layout in (torch.sparse_csr, torch.sparse_coo):
        product = scipy_transposed_product(_scipy_csr(x.float()),
                                           grad.detach().float().contiguous().numpy())
        return torch.from_numpy(np.ascontiguousarray(product, dtype=np.float32))
    return torch.sparse.mm(x.float().t(), grad)   # CUDA: cuSPARSE's transposed product


class _SparseProduct(torch.autograd.Function):
    """``x @ rhs`` with sparse ``x`` (no gradient) and dense ``rhs``, accumulated in fp32."""

    @staticmethod
    def forward(ctx, x: Tensor, rhs: Tensor) -> Tensor:
        ctx.x, ctx.rhs_dtype = x, rhs.dtype
        if x.device.type == "cpu":
            x = _int64_csr(x)
        return torch.sparse.mm(x.float(), rhs.float()).to(rhs.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        rhs_grad = None
        if ctx.needs_input_grad[1]:
            rhs_grad = transposed_product(ctx.x, grad.float()).to(ctx.rhs_dtype)
        return None, rhs_grad


def sparse_product(x: Tensor, rhs: Tensor) -> Tensor:
    """``x @ rhs`` for a sparse ``x`` and a dense ``rhs`` (``in x out``), in ``rhs.dtype``."""
    return _SparseProduct.apply(x, rhs)


def input_product(x: Tensor, rhs: Tensor) -> Tensor:
    """``x @ rhs``, sparse-dense when ``x`` is sparse."""
    return sparse_product(x, rhs) if is_sparse(x) else x @ rhs


def inner_then_bias(out: Tensor, inner: Inner, bias: Optional[Tensor]) -> Tensor:
    """``inner(out) + bias``: a linear map's output with a linear step before its bias."""
    if inner is not None:
        out = inner(out)
    return out if bias is None else out + bias


class _TakesSparseInput:
    """A linear map's forward that also takes a sparse ``x`` and an optional ``inner`` step
    between the product and the bias: ``inner(x @ W.T) + b``."""

    def forward(self, x: Tensor, inner: Inner = None) -> Tensor:
        if not is_sparse(x) and inner is None:
            return super().forward(x)
        return inner_then_bias(input_product(x, self.weight.t()), inner, self.bias)


class SparseInputLinear(_TakesSparseInput, nn.Linear):
    """``nn.Linear`` that also takes a sparse input (same parameters and state-dict keys)."""


class SparseInputPyGLinear(_TakesSparseInput, PyGLinear):
    """PyG's ``Linear`` that also takes a sparse input (same parameters and state-dict keys)."""


_SPARSE_CLASSES = {PyGLinear: SparseInputPyGLinear, nn.Linear: SparseInputLinear}


def enable_sparse_input(model: nn.Module, in_channels: int) -> nn.Module:
    """Let ``model``'s first convolution take a sparse ``x``: its linear maps that read the
    ``in_channels`` raw features become sparse-aware (low-rank maps already are).

    The class of each map is swapped in place, so parameters, hooks and state-dict keys
    stay as they are.  Marks the model ``accepts_sparse_input``.
    """
    first = model.convs[0]
    for module in first.modules():
        cls = _SPARSE_CLASSES.get(type(module))
        fan_in = getattr(module, "in_features", getattr(module, "in_channels", None))
        if cls is not None and fan_in == in_channels:
            module.__class__ = cls
    model.accepts_sparse_input = True
    return model


def mlp_after_first_linear(mlp, x: Tensor) -> Tensor:
    """PyG ``MLP.forward`` from the output ``x`` of its first linear map on (the same steps,
    in the same order, as ``torch_geometric.nn.models.MLP.forward``)."""
    for i, (lin, norm) in enumerate(zip(mlp.lins, mlp.norms)):
        if i:
            x = lin(x)
        if mlp.act is not None and mlp.act_first:
            x = mlp.act(x)
        x = norm(x)
        if mlp.act is not None and not mlp.act_first:
            x = mlp.act(x)
        x = F.dropout(x, p=mlp.dropout[i], training=mlp.training)
    if mlp.plain_last:
        x = mlp.lins[-1](x)
        x = F.dropout(x, p=mlp.dropout[-1], training=mlp.training)
    return x


def require_linear_aggregation(conv) -> None:
    """Sparse input is aggregated after the linear map: exact only for sum / mean."""
    if str(conv.aggr) not in ("mean", "sum", "add"):
        raise GnnZeroError(f"{type(conv).__name__} with aggr={conv.aggr} cannot take sparse "
                           f"features (only mean / sum aggregation commutes with the linear "
                           f"map); {SPARSE_FIX}")


def check_sparse_input(model: nn.Module, x) -> None:
    """One line, before any layer runs, when a sparse batch meets a model that cannot take it."""
    module = getattr(model, "module", model)     # a DeepSpeed engine wraps the model
    if is_sparse(x) and not getattr(module, "accepts_sparse_input", False):
        raise GnnZeroError(f"the batch's features are sparse ({x.layout}) but "
                           f"{type(module).__name__} does not "
                           f"take sparse input (models from gnnzero.models.build_model do); "
                           f"{SPARSE_FIX}, or --sparse-batch-density 0")


def sparse_nbytes(x: Tensor) -> int:
    """Bytes of a sparse tensor as stored: values plus index arrays (row pointers)."""
    return sum(t.numel() * t.element_size() for t in sparse_parts(x))


def sparse_parts(x: Tensor) -> list[Tensor]:
    """The dense component tensors of a sparse tensor (values and indices)."""
    if x.layout == torch.sparse_coo:
        return [x._indices(), x._values()]
    if x.layout in (torch.sparse_csr, torch.sparse_bsr):
        return [x.crow_indices(), x.col_indices(), x.values()]
    return [x.ccol_indices(), x.row_indices(), x.values()]


def csr_tensor(matrix: sp.csr_matrix) -> Tensor:
    """A scipy CSR matrix as a torch CSR tensor (int32 indices while they fit; no copy of
    the values when they are float32)."""
    small = matrix.nnz < np.iinfo(np.int32).max and max(matrix.shape) < np.iinfo(np.int32).max
    index = np.int32 if small else np.int64
    return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(index, copy=False)),
                                   torch.from_numpy(matrix.indices.astype(index, copy=False)),
                                   torch.from_numpy(np.asarray(matrix.data, np.float32)),
                                   matrix.shape)
