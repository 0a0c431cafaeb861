"""Sparse feature batches through the first layer: equal to the dense path (the reference is
the same model fed the densified features), in fp32 and bf16, with every builder variant."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnzero.errors import GnnZeroError
from gnnzero.models import build_model, forward_batch
from gnnzero.models.sparse_input import (_int64_csr, sparse_nbytes, sparse_product,
                                         transposed_product)
from torch_geometric.data import Data

ARCHS = ("gcn", "sage", "gat", "gin", "pinsage")
VARIANTS = {"dense": {}, "lowrank": {"rank": 4},
            "shared+lowrank": {"rank": 4, "share_weights": True, "num_layers": 4},
            "checkpointed": {"activation_checkpointing": True}}
N, F_IN = 60, 40


def _graph(seed: int = 0, density: float = 0.08):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, F_IN, generator=g) * (torch.rand(N, F_IN, generator=g) < density)
    x[5] = 0.0                                   # a node without features
    src = torch.randint(0, N, (300,), generator=g)
    dst = torch.randint(0, N - 3, (300,), generator=g)   # the last nodes have no in-edges
    weight = torch.rand(300, generator=g) + 0.1
    return x, torch.stack([src, dst]), weight


def _model(arch: str, **kwargs):
    torch.manual_seed(0)
    args = {"num_layers": 2, **kwargs}
    return build_model(arch, F_IN, 16, 5, args.pop("num_layers"), dropout=0.0, **args)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "edge-weights"])
def test_sparse_logits_and_gradients_equal_dense(arch, variant, weighted):
    x, edge_index, weight = _graph()
    edge_weight = weight if weighted else None
    model = _model(arch, **VARIANTS[variant])
    dense_out = model(x, edge_index, edge_weight)
    dense_out.square().sum().backward()
    dense_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for layout in (torch.sparse_csr, torch.sparse_coo):
        xs = x.to_sparse_csr() if layout == torch.sparse_csr else x.to_sparse_coo()
        sparse_out = model(xs, edge_index, edge_weight)
        assert _rel(sparse_out, dense_out) < 1e-5
        sparse_out.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert grads.keys() == dense_grads.keys()
        scale = max(float(g.abs().max()) for g in dense_grads.values())
        for name, grad in grads.items():   # relative, floored at 1e-3 of the largest gradient
            reference = dense_grads[name]
            err = float((grad - reference).abs().max())
            assert err <= 1e-5 * max(float(reference.abs().max()), 1e-3 * scale), name
        model.zero_grad()


@pytest.mark.parametrize("arch", ARCHS)
def test_only_the_first_layer_reads_sparse(arch):
    """The maps swapped for sparse-aware ones are the first conv's input maps; state-dict
    keys stay PyG's (checkpoints load across dense and sparse runs)."""
    model = _model(arch, num_layers=3)
    swapped = [name for name, m in model.named_modules() if type(m).__name__.startswith("SparseInput")]
    assert swapped and all(name.startswith("convs.0.") for name in swapped)
    reference = build_model(arch, F_IN, 16, 5, 3, dropout=0.0)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.accepts_sparse_input


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_sparse_batch_matches_dense_bf16(arch):
    x, edge_index, _ = _graph()
    model = _model(arch).to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    dense_out = model(xb, edge_index)
    sparse_out = model(xb.to_sparse_csr(), edge_index)
    assert sparse_out.dtype == torch.bfloat16
    assert _rel(sparse_out, dense_out) < 3e-2


def test_product_accumulates_in_fp32():
    """bf16 values and weight, fp32 accumulation: equals the fp32 product of the bf16-rounded
    operands, rounded once; a bf16 running sum of 2000 terms would not."""
    g = torch.Generator().manual_seed(1)
    x = torch.full((3, 2000), 1.0).to(torch.bfloat16)
    w = (torch.rand(2000, 4, generator=g) * 1e-2).to(torch.bfloat16)
    out = sparse_product(x.to_sparse_csr(), w)
    reference = (x.float() @ w.float()).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference)
    running = torch.zeros(3, 4, dtype=torch.bfloat16)
    for k in range(2000):          # the control: accumulating in bf16 stalls
        running += x[:, k:k + 1] * w[k]
    assert _rel(running, reference.float()) > 0.05


def test_weight_gradient_routes_agree():
    """The scipy route (CPU, CSR with int32 or int64 indices, or COO) and torch's transposed
    product give x.T @ g."""
    x, _, _ = _graph(density=0.2)
    g = torch.randn(N, 7)
    reference = x.t() @ g
    csr = x.to_sparse_csr()
    narrow = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(),
                                     csr.values(), csr.shape)
    for sparse in (csr, narrow, x.to_sparse_coo()):
        assert torch.allclose(transposed_product(sparse, g), reference, atol=1e-5)
    assert torch.allclose(torch.sparse.mm(csr.t(), g), reference, atol=1e-5)
    wide = _int64_csr(narrow)
    assert wide.col_indices().dtype == torch.int64 and torch.equal(wide.to_dense(), x)


def test_sparse_nbytes_counts_values_and_indices():
    x, _, _ = _graph()
    csr = x.to_sparse_csr()
    nnz = int((x != 0).sum())
    assert sparse_nbytes(csr) == nnz * 4 + nnz * 8 + (N + 1) * 8


class _UserModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(F_IN, 5)

    def forward(self, x, edge_index, edge_weight=None):
        return self.lin(x)


def test_sparse_batch_into_a_model_that_cannot_take_it_is_one_line():
    x, edge_index, _ = _graph()
    batch = Data(x=x.to_sparse_csr(), edge_index=edge_index)
    with pytest.raises(GnnZeroError, match="--feature-store dense") as info:
        forward_batch(_UserModel(), batch)
    assert "\n" not in str(info.value)
    dense = Data(x=x, edge_index=edge_index)
    assert forward_batch(_UserModel(), dense).shape == (N, 5)


def test_max_aggregation_refuses_sparse_input():
    x, edge_index, _ = _graph()
    model = _model("sage")
    model.convs[0].aggr = "max"
    with pytest.raises(GnnZeroError, match="aggr=max"):
        model(x.to_sparse_csr(), edge_index)
