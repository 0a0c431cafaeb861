"""Model builders: PyG ``BasicGNN`` stacks with low-rank and shared weights.

``build_model("sage", 500, 256, 8, 4, rank=16, share_weights=True)`` gives a
GraphSAGE whose dense linear maps are rank-16 factorisations and whose
hidden-to-hidden layers share one set of weights (biases, norms and attention
vectors stay per layer).  Every model's ``forward(x, edge_index, edge_weight=None)``
returns logits.
"""
from __future__ import annotations

import functools
import re
import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE
from torch_geometric.nn.models.basic_gnn import BasicGNN
from torch_geometric.data import HeteroData
from torch_geometric.nn import MLP

from .convs import GATConvFp32, GCNConvFp32, GINConvWeighted, PinSAGEConv, SAGEConvWeighted
from .importance import pinsage_neighbourhood
from .lowrank import replace_linears_with_low_rank, share_linear_weights
from .sparse_input import check_sparse_input, enable_sparse_input
from .options import ARCHS, JK_MODES, NORMS, hidden_layer_indices
from ..errors import GnnZeroError



class CategoricalInputMixin:
    """``forward(..., x_cat=ids)``: the node features are ``[x, input_encoder(x_cat)]`` (an
    ``EmbeddingBag``, ``--categorical``) before the first layer.  Mixed into a built model's
    class only when it has categorical columns (:func:`_with_categorical_input`), so every
    other model keeps PyG's forward (``to_hetero`` traces it with torch.fx)."""

    def forward(self, x, edge_index, edge_weight=None, *args, x_cat: Optional[Tensor] = None,
                **kwargs):
        if x_cat is None:
            raise GnnZeroError("this model embeds categorical columns (--categorical) but the "
                               "batch carries no x_cat; build batches from the dataset it was "
                               "trained on")
        return super().forward(self.input_encoder(x, x_cat), edge_index, edge_weight, *args,
                               **kwargs)


@functools.lru_cache(maxsize=None)
def _with_categorical_input(cls: type) -> type:
    """``cls`` with :class:`CategoricalInputMixin` first (one class per builder class)."""
    return type(f"Categorical{cls.__name__}", (CategoricalInputMixin, cls), {})


class GCNModel(GCN):
    supports_edge_weight = True

    def init_conv(self, in_channels, out_channels, **kwargs):
        return GCNConvFp32(in_channels, out_channels, **kwargs)


class SAGEModel(GraphSAGE):
    supports_edge_weight = True

    def init_conv(self, in_channels, out_channels, **kwargs):
        return SAGEConvWeighted(in_channels, out_channels, **kwargs)


class GINModel(GIN):
    supports_edge_weight = True

    def init_conv(self, in_channels, out_channels, **kwargs):
        mlp = MLP([in_channels, out_channels, out_channels], act=self.act,
                  act_first=self.act_first, norm=self.norm, norm_kwargs=self.norm_kwargs)
        return GINConvWeighted(mlp, **kwargs)


class GATModel(GAT):
    """PyG's GAT stack; ``edge_weight`` is accepted and ignored (see ``GATConvFp32``)."""

    supports_edge_weight = True
    supports_edge_attr = False

    def init_conv(self, in_channels, out_channels, **kwargs):
        heads = kwargs.pop("heads", 1)
        concat = not getattr(self, "_is_conv_to_out", False)
        if concat:
            out_channels //= heads
        return GATConvFp32(in_channels, out_channels, heads=heads, concat=concat,
                           dropout=self.dropout.p, **kwargs)


class PinSAGEModel(BasicGNN):
    """PinSAGE: aggregation over random-walk importance neighbourhoods.

    ``forward(x, edge_index, edge_weight)`` uses ``edge_weight`` as neighbour
    importance when given (e.g. GraphSAINT norms or precomputed visit counts);
    without it, each node's neighbourhood becomes its ``top_k`` most visited nodes
    under ``num_walks`` random walks of ``walk_length`` hops, weighted by visit
    count (``pinsage_neighbourhood``).  The walks use a fixed seed, so every rank
    and every epoch sees the same neighbourhoods; the last graph's result is cached.
    """

    supports_edge_weight = True
    supports_edge_attr = False

    def __init__(self, *args, num_walks: int = 20, walk_length: int = 3, top_k: int = 10,
                 walk_seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_walks, self.walk_length, self.top_k, self.walk_seed = (
            num_walks, walk_length, top_k, walk_seed)
        self._neighbourhood_cache: Optional[tuple] = None

    def init_conv(self, in_channels, out_channels, **kwargs):
        return PinSAGEConv(in_channels, out_channels,
                           output_layer=getattr(self, "_is_conv_to_out", False))

    def importance_graph(self, edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
        """``(edge_index, edge_weight)`` of the random-walk neighbourhoods of this graph."""
        cache = self._neighbourhood_cache
        if (cache is not None and cache[0] == num_nodes and cache[1].shape == edge_index.shape
                and torch.equal(cache[1], edge_index.cpu())):
            return cache[2].to(edge_index.device), cache[3].to(edge_index.device)
        new_index, weight = pinsage_neighbourhood(edge_index, num_nodes, self.num_walks,
                                                  self.walk_length, self.top_k, self.walk_seed)
        self._neighbourhood_cache = (num_nodes, edge_index.detach().cpu().clone(),
                                     new_index.cpu(), weight.cpu())
        return new_index, weight

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        if edge_weight is None:
            edge_index, edge_weight = self.importance_graph(edge_index, x.size(0))
        return super().forward(x, edge_index, edge_weight, **kwargs)


MODEL_CLASSES = {"gcn": GCNModel, "sage": SAGEModel, "gat": GATModel, "gin": GINModel,
                 "pinsage": PinSAGEModel}


class BoolMaskDropout(nn.Dropout):
    """``nn.Dropout`` that keeps a boolean mask for backward.

    On CPU ``F.dropout`` multiplies by a float noise tensor and autograd keeps that
    tensor, 4 bytes an element.  ``torch.native_dropout``, the kernel CUDA's dropout
    uses, keeps a ``bool`` mask instead: with activation checkpointing, those masks and the
    layers' inputs are all the forward leaves.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return torch.native_dropout(x, self.p, True)[0]


class CheckpointedLayer(nn.Module):
    """Recompute ``layer`` (and the activation ``act`` after it) in the backward pass instead
    of storing their activations.

    With ``act`` inside, backward keeps only the layer's input and what follows the
    activation (dropout's mask), not the activation's ``N x hidden`` output as well:
    recomputing an elementwise activation costs next to nothing.
    """

    def __init__(self, layer: nn.Module, act: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.layer, self.act = layer, act

    def reset_parameters(self) -> None:
        self.layer.reset_parameters()

    def _run(self, *args, **kwargs):
        out = self.layer(*args, **kwargs)
        return out if self.act is None else self.act(out)

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self._run(*args, **kwargs)
        return checkpoint(self._run, *args, use_reentrant=False, **kwargs)


def checkpoint_layers(model: BasicGNN) -> None:
    """Wrap every convolution of ``model`` in a :class:`CheckpointedLayer`.

    Without a norm between convolution and activation, the activation moves inside the
    checkpoint of each layer ``BasicGNN.forward`` activates (all but the last, unless
    ``jk``) and ``model.act`` becomes None; with a norm (BatchNorm's running statistics
    must not be updated twice by a recompute) only the convolution is recomputed.
    """
    fuse = model.act is not None and model.norms is not None and all(
        isinstance(norm, nn.Identity) for norm in model.norms)
    for i, conv in enumerate(model.convs):
        activated = i < model.num_layers - 1 or model.jk_mode is not None
        model.convs[i] = CheckpointedLayer(conv, model.act if fuse and activated else None)
    if fuse:
        model.act = None


def plain_state_dict(state_dict: dict) -> dict:
    """Keys of a model built with ``activation_checkpointing=True`` renamed for the plain model.

    ``CheckpointedLayer`` adds a ``.layer`` level (``convs.0.layer.lin_l.U``); the
    same weights load into a model built without it under ``convs.0.lin_l.U``.
    """
    return {re.sub(r"^(convs\.\d+)\.layer\.", r"\1.", key): value
            for key, value in state_dict.items()}


def _validate(arch: str, in_channels: int, hidden_channels: int, out_channels: int,
              num_layers: int, rank: Optional[int], dropout: float, norm: Optional[str],
              jk: Optional[str], heads: int) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch '{arch}' is unknown; allowed values: {', '.join(ARCHS)}")
    for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                        ("out_channels", out_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    if rank is not None and (not isinstance(rank, int) or rank <= 0):
        raise ValueError(f"rank must be None (dense) or an integer >= 1, got {rank!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if norm not in NORMS:
        raise ValueError(f"norm '{norm}' is unknown; allowed values: None, batch, layer, graph")
    if jk not in JK_MODES:
        raise ValueError(f"jk '{jk}' is unknown; allowed values: None, last, cat, max")
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be an integer >= 1, got {heads!r}")
    if arch == "gat" and hidden_channels % heads:
        raise ValueError(f"heads={heads} does not divide hidden_channels={hidden_channels}; "
                         f"allowed heads are divisors of {hidden_channels}")


def build_model(arch: str, in_channels: int, hidden_channels: int, out_channels: int,
                num_layers: int, *, share_weights: bool = False, rank: Optional[int] = None,
                dropout: float = 0.5, norm: Optional[str] = None, jk: Optional[str] = None,
                heads: int = 1, activation_checkpointing: bool = False,
                categorical: Optional[tuple[int, int]] = None) -> BasicGNN:
    """Build a GNN whose ``forward(x, edge_index, edge_weight=None)`` returns logits.

    ``rank`` factorises every dense linear map inside the convolutions
    (``LowRankLinear``; ``rank >= min(in, out)`` stays dense; maps reading the raw input
    features get ``init="input"``, the rest ``init="spectral"``).  ``share_weights``
    makes all hidden-to-hidden convolutions use one set of linear weights, owned
    once by ``model.shared_cores`` (nothing to share below 3 layers, or 2 with ``jk``).
    ``activation_checkpointing`` recomputes each convolution in the backward pass.
    ``x`` may be a torch sparse tensor (CSR / COO): the first layer multiplies it
    sparse-dense (:mod:`.sparse_input`), later layers are unchanged.
    ``edge_weight`` scales neighbour messages (GraphSAINT norms); ``pinsage`` uses it
    as importance or, without it, random-walk importance; ``gat`` ignores it.
    ``categorical=(table rows, dim)`` adds an ``EmbeddingBag`` input encoder: the model
    then takes ``x_cat`` ids and its first layer reads ``in_channels + dim`` features.
    """
    _validate(arch, in_channels, hidden_channels, out_channels, num_layers, rank, dropout,
              norm, jk, heads)
    kwargs = {"heads": heads} if arch == "gat" else {}
    features = in_channels + (categorical[1] if categorical else 0)
    model = MODEL_CLASSES[arch](features, hidden_channels, num_layers, out_channels,
                                dropout=dropout, norm=norm, jk=jk, **kwargs)
    model.dropout = BoolMaskDropout(dropout)
    if categorical:
        from ..data.categorical import NodeFeatureEncoder

        model.input_encoder = NodeFeatureEncoder(*categorical)
        model.__class__ = _with_categorical_input(type(model))
    if rank is not None:
        # Maps reading the raw (often sparse bag-of-words) input features get a small input
        # factor, maps reading hidden activations a spectral init (see LowRankLinear).
        for i, conv in enumerate(model.convs):
            replace_linears_with_low_rank(conv, rank, features if i == 0 else None)
    enable_sparse_input(model, features)   # before checkpointing wraps the convs
    if share_weights:
        shared = [model.convs[i] for i in hidden_layer_indices(num_layers, jk)]
        if len(shared) < 2:
            warnings.warn(f"share_weights=True with num_layers={num_layers} has "
                          f"{len(shared)} hidden-to-hidden layer(s): nothing is shared; "
                          f"use num_layers >= 4 (or jk with >= 3)", stacklevel=2)
        model.shared_cores = share_linear_weights(shared)
    if activation_checkpointing:
        checkpoint_layers(model)
    model.config = dict(arch=arch, in_channels=in_channels, hidden_channels=hidden_channels,
                        out_channels=out_channels, num_layers=num_layers,
                        share_weights=share_weights, rank=rank, dropout=dropout, norm=norm,
                        jk=jk, heads=heads, categorical=categorical)
    return model


def forward_batch(model: nn.Module, batch, pairs: Optional[Tensor] = None) -> Tensor:
    """Logits for a PyG batch, passing GraphSAINT's edge weights (``edge_weight`` or
    PyG's ``edge_norm``) when present; with ``pairs`` (a link predictor), their scores.
    A heterogeneous batch gives the logits of its ``target_type`` nodes."""
    if isinstance(batch, HeteroData):
        return model(batch.x_dict, batch.edge_index_dict)[batch.target_type]
    check_sparse_input(model, batch.x)
    edge_weight = getattr(batch, "edge_weight", None)
    if edge_weight is None:
        edge_weight = getattr(batch, "edge_norm", None)
    extra = {"x_cat": batch.x_cat} if "x_cat" in batch else {}   # --categorical ids
    if pairs is None:
        return model(batch.x, batch.edge_index, edge_weight, **extra)
    return model(batch.x, batch.edge_index, edge_weight, pairs, **extra)
