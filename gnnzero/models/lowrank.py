"""Low-rank factorised linear layers and ALBERT-style cross-layer weight sharing."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear as PyGLinear

LINEAR_TYPES = (nn.Linear, PyGLinear)


class LowRankLinear(nn.Module):
    """``y = x U V + b`` with ``U: in x r`` and ``V: r x out``.

    Parameters: ``r * (in + out)`` (+ ``out`` bias) instead of ``in * out``.
    Initialisation keeps the output variance of a dense layer whose weights have
    variance ``weight_variance`` (default: PyTorch's ``nn.Linear`` init,
    ``1 / (3 * in)``): ``Var(U) = 1 / in`` and ``Var(V) = in * weight_variance / r``
    give ``Var(y) = r * in * Var(U) * Var(V) * Var(x) = in * weight_variance * Var(x)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 weight_variance: Optional[float] = None) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.weight_variance = weight_variance or 1.0 / (3.0 * in_features)
        self.U = nn.Parameter(torch.empty(in_features, rank))
        self.V = nn.Parameter(torch.empty(rank, out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Uniform(-a, a) has variance a^2 / 3.
        u_bound = math.sqrt(3.0 / self.in_features)
        v_bound = math.sqrt(3.0 * self.in_features * self.weight_variance / self.rank)
        nn.init.uniform_(self.U, -u_bound, u_bound)
        nn.init.uniform_(self.V, -v_bound, v_bound)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        out = (x @ self.U) @ self.V
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}")


def low_rank_or_dense(in_features: int, out_features: int, rank: Optional[int], bias: bool,
                      weight_variance: Optional[float] = None) -> nn.Module:
    """A ``LowRankLinear`` when it saves parameters, else a dense ``nn.Linear``."""
    if rank is None or rank >= min(in_features, out_features):
        return nn.Linear(in_features, out_features, bias=bias)
    return LowRankLinear(in_features, out_features, rank, bias, weight_variance)


def _linear_dims(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, PyGLinear):
        return int(module.in_channels), int(module.out_channels)
    return int(module.in_features), int(module.out_features)


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def linear_paths(module: nn.Module) -> list[str]:
    """Dotted paths of every dense linear map inside ``module``."""
    return [name for name, child in module.named_modules()
            if isinstance(child, LINEAR_TYPES) and name]


def replace_linears_with_low_rank(module: nn.Module, rank: int) -> nn.Module:
    """Swap every dense linear map in ``module`` for a ``LowRankLinear`` of ``rank``.

    The replacement keeps the output variance of the layer it replaces (the
    dense weight's empirical variance is passed on).  ``rank >= min(in, out)``
    keeps the dense layer.
    """
    for path in linear_paths(module):
        dense = module.get_submodule(path)
        fan_in, fan_out = _linear_dims(dense)
        if rank >= min(fan_in, fan_out):
            continue
        variance = float(dense.weight.detach().float().var()) if dense.weight.numel() > 1 else None
        _set_submodule(module, path, LowRankLinear(fan_in, fan_out, rank,
                                                   bias=dense.bias is not None,
                                                   weight_variance=variance))
    return module


class SharedWeightLinear(nn.Module):
    """A linear map whose weight (``core``) is shared with other layers; its bias is its own.

    The core is *not* registered as a child here: it is owned once by the model
    (``model.shared_cores``) so that ZeRO-3 registers one set of hooks for it and
    partitions its parameters once; calling ``core(x)`` fires those hooks, so the
    weights are gathered for every use and their gradients summed over uses.
    """

    def __init__(self, core: nn.Module, bias: Optional[Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "_core", core)
        self.in_features = core.in_features
        self.out_features = core.out_features
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @property
    def core(self) -> nn.Module:
        return self._core

    def reset_parameters(self) -> None:
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        out = self._core(x)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"shared core {self._core.__class__.__name__}, bias={self.bias is not None}"


def _weight_only_copy(linear: nn.Module) -> nn.Module:
    """A bias-free copy of ``linear`` (dense or low-rank) holding the same weights."""
    if isinstance(linear, LowRankLinear):
        core = LowRankLinear(linear.in_features, linear.out_features, linear.rank, bias=False,
                             weight_variance=linear.weight_variance)
        core.U.data.copy_(linear.U.data)
        core.V.data.copy_(linear.V.data)
        return core
    fan_in, fan_out = _linear_dims(linear)
    core = nn.Linear(fan_in, fan_out, bias=False)
    core.weight.data.copy_(linear.weight.data)
    return core


def share_linear_weights(layers: Iterable[nn.Module]) -> nn.ModuleDict:
    """Make ``layers`` (same shape) use the first layer's linear weights.

    Every dense or low-rank linear map in each layer becomes a
    ``SharedWeightLinear`` around one core per position; biases and all
    non-linear parameters (norms, attention vectors, GIN eps) stay per layer.
    Returns the cores, which the caller must register once on the model.
    """
    layers = list(layers)
    cores = nn.ModuleDict()
    if len(layers) < 2:
        return cores
    paths = [p for p in linear_paths(layers[0])] + [
        name for name, m in layers[0].named_modules() if isinstance(m, LowRankLinear)]
    for path in sorted(set(paths)):
        cores[path.replace(".", "__")] = _weight_only_copy(layers[0].get_submodule(path))
    for layer in layers:
        for key, core in cores.items():
            path = key.replace("__", ".")
            old = layer.get_submodule(path)
            _set_submodule(layer, path, SharedWeightLinear(core, old.bias))
    return cores
