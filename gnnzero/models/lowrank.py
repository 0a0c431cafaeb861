"""Low-rank factorised linear layers and ALBERT-style cross-layer weight sharing."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from .sparse_input import inner_then_bias, input_product, is_sparse

LINEAR_TYPES = (nn.Linear, PyGLinear)
INPUT_FACTOR_GAIN = 0.1  # std of U relative to 1/sqrt(in) under init="input"; see LowRankLinear
LOW_RANK_INITS = ("spectral", "input")
_EXACT_SVD_MAX_ELEMENTS = 1 << 24  # above this, a randomised SVD (torch.svd_lowrank)


def default_weight_variance(in_features: int) -> float:
    """Weight variance of PyTorch's ``nn.Linear`` init: ``U(-1/sqrt(in), 1/sqrt(in))``."""
    return 1.0 / (3.0 * in_features)


def spectral_factors(in_features: int, out_features: int, rank: int,
                     weight_variance: float) -> tuple[Tensor, Tensor]:
    """``U (in x r), V (r x out)``: the rank-``r`` truncated SVD of a dense init, rescaled.

    ``W ~ U(-a, a)`` with ``Var = weight_variance``; ``W ~= P S Q^T`` gives
    ``U = P sqrt(S) c``, ``V = sqrt(S) Q^T c`` with ``c^4 = ||W||_F^2 / ||S_r||^2`` so that
    ``||U V||_F = ||W||_F`` (the dense layer's output variance for isotropic inputs: the
    init distribution is invariant under signed permutations, so
    ``E[(UV)(UV)^T] = out * weight_variance * I``).  Spectral initialisation of factorised
    layers follows Khodak et al., "Initialization and regularization of factorized neural
    layers" (ICLR 2021); the rescaling is ours.
    """
    bound = math.sqrt(3.0 * weight_variance)
    dense = torch.empty(in_features, out_features).uniform_(-bound, bound)
    if dense.numel() <= _EXACT_SVD_MAX_ELEMENTS:
        left, singular, right_t = torch.linalg.svd(dense, full_matrices=False)
        right = right_t.T
    else:
        left, singular, right = torch.svd_lowrank(dense, q=min(rank + 8, *dense.shape), niter=4)
    left, singular, right = left[:, :rank], singular[:rank], right[:, :rank]
    scale = (dense.pow(2).sum() / singular.pow(2).sum()).pow(0.25)
    root = singular.sqrt() * scale
    return left * root, (right * root).T


class LowRankLinear(nn.Module):
    """``y = x U V + b`` with ``U: in x r`` and ``V: r x out``.

    Parameters: ``r * (in + out)`` (+ ``out`` bias) instead of ``in * out``.
    ``rank >= min(in, out)`` saves nothing, so the layer falls back to one dense
    ``weight`` (``out x in``, like ``nn.Linear``) and ``U``/``V`` are ``None``.

    Both initialisations keep the output variance of a dense layer whose weights have
    variance ``weight_variance`` (default: ``nn.Linear``'s, ``1 / (3 in)``):

    - ``init="spectral"`` (default): the top-``r`` singular directions of a dense
      draw, split evenly between ``U`` and ``V`` (``spectral_factors``).  Balanced,
      orthogonal factors give Adam comparable step sizes on both, like the dense layer.
    - ``init="input"``: independent entries with ``Var(U) = g^2 / in`` and
      ``Var(V) = in * weight_variance / (r g^2)``, so ``Var(W_ij) = r Var(U) Var(V) =
      weight_variance`` for any ``g``; ``g = INPUT_FACTOR_GAIN = 0.1`` (small ``U``,
      large ``V``).  Meant for maps that read raw, sparse, high-dimensional input
      features: rows of ``U`` for features never seen in training stay near zero
      instead of being amplified into noise on unseen nodes.

    Measured on Cora (4-layer GraphSAGE, hidden 256, rank 16, shared, plain Adam, mean of
    10 seeds): ``input`` everywhere 70.6 %, ``spectral`` everywhere 67.0 % (5 seeds),
    ``input`` for the first layer and ``spectral`` for the rest 76.1 % (no seed below 71 %);
    hence ``build_model``'s choice.  ``g = 1`` gave ~60 %, ``g <= 0.03`` was unstable.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 weight_variance: Optional[float] = None, init: str = "spectral") -> None:
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got "
                             f"{in_features} and {out_features}")
        if init not in LOW_RANK_INITS:
            raise ValueError(f"init '{init}' is unknown; allowed values: "
                             f"{', '.join(LOW_RANK_INITS)}")
        self.in_features, self.out_features, self.rank, self.init = (
            in_features, out_features, rank, init)
        self.weight_variance = (default_weight_variance(in_features) if weight_variance is None
                                else float(weight_variance))
        self.dense = rank >= min(in_features, out_features)
        if self.dense:
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
            self.U = self.V = None
        else:
            self.U = nn.Parameter(torch.empty(in_features, rank))
            self.V = nn.Parameter(torch.empty(rank, out_features))
            self.weight = None
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Uniform(-a, a) has variance a^2 / 3.
        if self.dense:
            bound = math.sqrt(3.0 * self.weight_variance)
            nn.init.uniform_(self.weight, -bound, bound)
        elif self.init == "spectral":
            u, v = spectral_factors(self.in_features, self.out_features, self.rank,
                                    self.weight_variance)
            with torch.no_grad():
                self.U.copy_(u)
                self.V.copy_(v)
        else:
            gain2 = INPUT_FACTOR_GAIN ** 2
            u_bound = math.sqrt(3.0 * gain2 / self.in_features)
            v_bound = math.sqrt(3.0 * self.in_features * self.weight_variance / (self.rank * gain2))
            nn.init.uniform_(self.U, -u_bound, u_bound)
            nn.init.uniform_(self.V, -v_bound, v_bound)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, inner: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """``x U V + b``; a sparse ``x`` goes through a sparse-dense product, and ``inner``
        (a linear step such as an aggregation) is applied before the bias."""
        if self.dense and inner is None and not is_sparse(x):
            return F.linear(x, self.weight, self.bias)
        out = (input_product(x, self.weight.t()) if self.dense
               else input_product(x, self.U) @ self.V)
        return inner_then_bias(out, inner, self.bias)

    def extra_repr(self) -> str:
        kind = "dense fallback" if self.dense else f"rank={self.rank}, init={self.init}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, {kind}, "
                f"bias={self.bias is not None}")


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


def replace_linears_with_low_rank(module: nn.Module, rank: int,
                                  raw_input_features: Optional[int] = None) -> nn.Module:
    """Swap every dense linear map in ``module`` for a ``LowRankLinear`` of ``rank``.

    The replacement keeps the output variance of the layer it replaces: the dense
    weight's empirical variance sets the factors' init (so Glorot-initialised GAT/GCN
    maps stay Glorot-scaled) and the dense bias is copied.  ``rank >= min(in, out)``
    keeps the dense layer untouched.  Maps that read ``raw_input_features``-wide
    inputs (the model's raw features) get ``init="input"``, the others ``"spectral"``.
    """
    for path in linear_paths(module):
        dense = module.get_submodule(path)
        fan_in, fan_out = _linear_dims(dense)
        if rank >= min(fan_in, fan_out):
            continue
        variance = float(dense.weight.detach().float().var()) if dense.weight.numel() > 1 else None
        low = LowRankLinear(fan_in, fan_out, rank, bias=dense.bias is not None,
                            weight_variance=variance,
                            init="input" if fan_in == raw_input_features else "spectral")
        if dense.bias is not None:
            with torch.no_grad():
                low.bias.copy_(dense.bias)
        _set_submodule(module, path, low)
    return module


class SharedWeightLinear(nn.Module):
    """A linear map whose weight (``core``) is shared with other layers; its bias is its own.

    The core is *not* registered as a child here: it is owned once by the model
    (``model.shared_cores``) so that ``parameters()`` lists it once, DeepSpeed
    partitions it once and ZeRO-3 registers one set of hooks for it.  Calling
    ``core(x)`` as a module fires those hooks, so the weights are gathered for
    every use and autograd sums their gradients over all uses.
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
        """Re-draw this layer's bias; the shared core is reset by its owner."""
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
                             weight_variance=linear.weight_variance, init=linear.init)
        with torch.no_grad():
            for name in ("U", "V", "weight"):
                if getattr(linear, name) is not None:
                    getattr(core, name).copy_(getattr(linear, name))
        return core
    fan_in, fan_out = _linear_dims(linear)
    core = nn.Linear(fan_in, fan_out, bias=False)
    with torch.no_grad():
        core.weight.copy_(linear.weight)
    return core


def share_linear_weights(layers: Iterable[nn.Module]) -> nn.ModuleDict:
    """Make ``layers`` (same structure) use the first layer's linear weights.

    Every dense or low-rank linear map in each layer becomes a
    ``SharedWeightLinear`` around one core per position; biases and all
    non-linear parameters (norms, attention vectors, GIN eps) stay per layer.
    Returns the cores, which the caller must register once on the model.
    """
    layers = list(layers)
    cores = nn.ModuleDict()
    if len(layers) < 2:
        return cores
    paths = sorted(name for name, m in layers[0].named_modules()
                   if name and isinstance(m, LINEAR_TYPES + (LowRankLinear,)))
    for path in paths:
        shapes = {tuple(p.shape for p in layer.get_submodule(path).parameters())
                  for layer in layers}
        if len(shapes) != 1:
            raise ValueError(f"cannot share '{path}': its shape differs between layers "
                             f"({sorted(shapes)}); share only layers of equal width")
        cores[path.replace(".", "__")] = _weight_only_copy(layers[0].get_submodule(path))
    for layer in layers:
        for key, core in cores.items():
            path = key.replace("__", ".")
            old = layer.get_submodule(path)
            _set_submodule(layer, path, SharedWeightLinear(core, old.bias))
    return cores
