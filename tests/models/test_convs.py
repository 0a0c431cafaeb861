"""Convolutions: every architecture takes edge weights, unit weights equal none, and under bf16
every scatter inside a convolution (message sum, GCN degrees, GAT softmax) runs in fp32.

The fp32 check records the operands of the scatter kernels themselves (a ``TorchDispatchMode``
sees ``scatter_add_``, ``scatter_reduce_``, ``index_add_``, torch_scatter's ops ... whichever
path PyG takes), because the end result cannot tell: CPU ``scatter_add_`` accumulates bf16 in
fp32 anyway, while GPU bf16 atomics stall at 256 + 1 == 256.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from unittest.mock import patch

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.data import HeteroData
from torch_geometric.nn import models as pyg_models
from torch_geometric.nn.conv import MessagePassing

from gnnzero.models import build_hetero_model, build_model
from gnnzero.models import convs as convs_module
from gnnzero.models import sparse_input
from gnnzero.models.convs import Fp32AggregationMixin, GCNConvFp32
from tests.models.common import ARCHS, HEADS, LEAVES, random_graph, star_graph


@pytest.mark.parametrize("arch", ARCHS)
def test_every_model_takes_edge_weight(arch):
    torch.manual_seed(0)
    model = build_model(arch, 12, 8, 3, 2, dropout=0.0, heads=HEADS if arch == "gat" else 1).eval()
    x = torch.randn(30, 12)
    edge_index, weight = random_graph()
    with torch.no_grad():
        base = model(x, edge_index, torch.ones_like(weight))
        changed = model(x, edge_index, weight)
    if arch == "gat":  # documented: attention re-normalises, edge_weight is ignored
        torch.testing.assert_close(base, changed)
    else:
        assert not torch.allclose(base, changed, atol=1e-5)


def test_unit_edge_weights_equal_no_weights_for_gcn_sage_gin():
    x = torch.randn(30, 12)
    edge_index, weight = random_graph()
    for arch in ("gcn", "sage", "gin"):
        model = build_model(arch, 12, 8, 3, 2, dropout=0.0).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x, edge_index),
                                       model(x, edge_index, torch.ones_like(weight)))


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def test_star_graph_saturates_a_bf16_accumulator():
    """Control: summing the hub's 5,000 unit messages in a bf16 accumulator stalls at 256
    (8 mantissa bits: 256 + 1 == 256) - what GPU bf16 atomics in scatter do."""
    _, edge_index = star_graph()
    ones = torch.ones(edge_index.size(1), dtype=torch.bfloat16)
    degree = torch.zeros(LEAVES + 1, dtype=torch.bfloat16).index_add_(0, edge_index[1], ones)
    assert degree[0].item() == 256.0


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "gin"])
def test_bf16_model_stays_close_to_fp32_on_a_star(arch):
    """End result only: on CPU this holds with PyG's own convs too (see the module docstring);
    the fp32 guarantee itself is test_bf16_messages_reach_every_scatter_in_fp32."""
    x, edge_index = star_graph()
    torch.manual_seed(0)
    model = build_model(arch, 8, 16, 4, 2, dropout=0.0).eval()
    with torch.no_grad():
        ref = model(x, edge_index)
        out = model.to(torch.bfloat16)(x.bfloat16(), edge_index)
    assert out.dtype == torch.bfloat16
    assert _relative_error(out[0], ref[0]) < 2e-2, "hub node"
    assert _relative_error(out[1:], ref[1:]) < 2e-2, "leaves"


# --- the dtype that reaches each scatter ---------------------------------------------------

# Kernels that sum / reduce values into slots: PyG's scatter (scatter_add_, scatter_reduce_),
# index_add_, segment reductions, torch_scatter's and torch_sparse's ops (scatter_max, spmm ...).
REDUCTION_OP = re.compile(r"scatter|index_add|index_reduce|segment|spmm|sparse_mm")
# ... and a product with a sparse operand: GCN's neighbour sum is one ``A @ x``
SPARSE_PRODUCT_OP = re.compile(r"mm|addmm|_sparse_addmm|_sparse_mm")


@dataclass(frozen=True)
class Reduction:
    module: str   # innermost MessagePassing module running, or "" outside every conv
    op: str       # e.g. "aten.scatter_add_"
    dtypes: tuple  # dtypes of its floating-point tensor operands (accumulator, source)


class ReductionRecorder(TorchDispatchMode):
    """Records every reduction kernel dispatched while active (below autograd, so whatever
    Python path led there), and the CPU weight-gradient products that run in scipy."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Reduction] = []
        self.modules: list[str] = [""]

    def __enter__(self):
        original = sparse_input.scipy_transposed_product

        def recorded(x, grad):
            dtypes = tuple(torch.from_numpy(np.empty(0, a.dtype)).dtype for a in (x.data, grad))
            self.records.append(Reduction(self.modules[-1], "scipy.csr_T_matmul", dtypes))
            return original(x, grad)
        self._patch = patch.object(sparse_input, "scipy_transposed_product", recorded)
        self._patch.start()
        return super().__enter__()

    def __exit__(self, *exc):
        self._patch.stop()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        name = func.overloadpacket.__name__
        sparse_product = (SPARSE_PRODUCT_OP.fullmatch(name)
                          and any(t.layout != torch.strided for t in tensors))
        if REDUCTION_OP.search(name) or sparse_product:
            dtypes = tuple(a.dtype for a in tensors if a.is_floating_point())
            self.records.append(Reduction(self.modules[-1],
                                          f"{func.namespace}.{func.overloadpacket.__name__}",
                                          dtypes))
        return func(*args, **kwargs)


@contextmanager
def record_reductions(model: torch.nn.Module):
    """``(recorder, conv_names)``: the reductions run inside ``model`` while the block runs,
    each attributed to the message-passing module that ran it."""
    recorder = ReductionRecorder()
    convs = {name: m for name, m in model.named_modules() if isinstance(m, MessagePassing)}

    def enter(name):
        return lambda module, args: recorder.modules.append(name)

    def leave(module, args, output):
        recorder.modules.pop()  # a forward hook must return None (or it replaces the output)

    handles = []
    for name, conv in convs.items():
        handles += [conv.register_forward_pre_hook(enter(name)), conv.register_forward_hook(leave)]
    try:
        with recorder:
            yield recorder, sorted(convs)
    finally:
        for handle in handles:
            handle.remove()


def _bf16_graph(weighted: bool):
    torch.manual_seed(0)
    x = torch.randn(30, 12).bfloat16()
    edge_index, weight = random_graph()
    return x, edge_index, weight.bfloat16() if weighted else None


def _reductions_by_conv(recorder, convs) -> dict[str, list[Reduction]]:
    by_conv = {name: [r for r in recorder.records if r.module == name] for name in convs}
    silent = [name for name, records in by_conv.items() if not records]
    assert not silent, f"no reduction recorded inside {silent}: the recorder misses their path"
    return by_conv


VARIANTS = {
    "dense": dict(num_layers=2),
    "lowrank_shared": dict(num_layers=4, rank=4, share_weights=True),
    "checkpointed": dict(num_layers=2, activation_checkpointing=True),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "edge_weight"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_messages_reach_every_scatter_in_fp32(arch, variant, weighted):
    """A bf16 model on bf16 inputs, training mode: every reduction inside every conv (and
    anywhere in the forward) sums fp32 operands into an fp32 accumulator."""
    torch.manual_seed(0)
    model = build_model(arch, 12, 8, 3, dropout=0.0, heads=HEADS if arch == "gat" else 1,
                        **VARIANTS[variant]).to(torch.bfloat16).train()
    x, edge_index, weight = _bf16_graph(weighted)
    with record_reductions(model) as (recorder, convs):
        out = model(x, edge_index, weight)
    assert out.dtype == torch.bfloat16
    _reductions_by_conv(recorder, convs)
    low = [r for r in recorder.records if any(d != torch.float32 for d in r.dtypes)]
    assert not low, f"reductions not in fp32: {low}"


def _backward_reductions(arch: str, variant: str = "dense") -> list[Reduction]:
    """The reductions of one bf16 backward (x itself requires grad, so the first layer's
    gather is differentiated too)."""
    torch.manual_seed(0)
    model = build_model(arch, 12, 8, 3, dropout=0.0, heads=HEADS if arch == "gat" else 1,
                        **VARIANTS[variant]).to(torch.bfloat16).train()
    x, edge_index, _ = _bf16_graph(weighted=False)
    out = model(x.detach().requires_grad_(), edge_index)
    with ReductionRecorder() as recorder:
        out.float().square().sum().backward()
    assert recorder.records, "no reduction recorded in backward"
    return recorder.records


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_backward_sums_every_gathered_gradient_in_fp32(arch, variant):
    """The same in backward: the gradients of the rows gathered onto edges (``x_j``, ``x_i``,
    GAT's attention terms) are summed by fp32 reductions.  The backward of PyG's gather is an
    ``index_add_`` in the rows' dtype; on CPU a 2-D one happens to accumulate wider, so only
    the dtype tells (GPU bf16 atomics stall)."""
    records = _backward_reductions(arch, variant)
    low = [r for r in records if any(d != torch.float32 for d in r.dtypes)]
    assert not low, f"backward reductions not in fp32: {low}"


def test_bf16_gather_gradient_is_the_fp32_sum_rounded_once():
    """The gather's gradient: every edge's gradient summed in fp32, rounded to bf16 once."""
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, 7, (3000,), generator=gen)
    grad = torch.rand(3000, 5, generator=gen).bfloat16()
    src = torch.zeros(7, 5, dtype=torch.bfloat16, requires_grad=True)
    conv = build_model("sage", 5, 5, 5, 1).convs[0]
    conv._index_select(src, index).backward(grad)
    ref = torch.zeros(7, 5).index_add_(0, index, grad.float()).bfloat16()
    assert torch.equal(src.grad, ref)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "gcn"])
def test_control_recorder_sees_bf16_backward_with_pyg_own_gather(arch, monkeypatch):
    """Control: with the mixin's gather reduced to PyG's own, the backward sums bf16 (GCN
    gathers nothing: its neighbour sum is one sparse product)."""
    monkeypatch.setattr(Fp32AggregationMixin, "_index_select", MessagePassing._index_select)
    records = _backward_reductions(arch)
    assert any("index_add" in r.op and torch.bfloat16 in r.dtypes for r in records), records


def _hetero_graph() -> HeteroData:
    gen = torch.Generator().manual_seed(0)
    data = HeteroData()
    data["paper"].x = torch.randn(40, 10, generator=gen)
    data["author"].x = torch.randn(20, 6, generator=gen)
    writes = torch.stack([torch.randint(0, 20, (80,), generator=gen),
                          torch.randint(0, 40, (80,), generator=gen)])
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "rev_writes", "author"].edge_index = writes.flip(0)
    data["paper", "cites", "paper"].edge_index = torch.randint(0, 40, (2, 120), generator=gen)
    return data


@pytest.mark.parametrize("arch", ["sage", "gat"])
def test_bf16_hetero_messages_reach_every_scatter_in_fp32(arch):
    """The same for ``build_hetero_model``: ``to_hetero``'s per-edge-type copies of our convs."""
    data = _hetero_graph()
    torch.manual_seed(0)
    model = build_hetero_model(arch, data, 8, 3, 2, dropout=0.0, rank=4,
                               heads=HEADS if arch == "gat" else 1).to(torch.bfloat16).train()
    x_dict = {key: x.bfloat16() for key, x in data.x_dict.items()}
    with record_reductions(model) as (recorder, convs):
        out = model(x_dict, data.edge_index_dict)
    assert out["paper"].dtype == torch.bfloat16
    assert len(convs) == 2 * len(data.edge_types)
    _reductions_by_conv(recorder, convs)
    low = [r for r in recorder.records if any(d != torch.float32 for d in r.dtypes)]
    assert not low, f"reductions not in fp32: {low}"


PYG_STACKS = {"gcn": pyg_models.GCN, "sage": pyg_models.GraphSAGE, "gat": pyg_models.GAT,
              "gin": pyg_models.GIN}


@pytest.mark.parametrize("arch", list(PYG_STACKS))
def test_control_recorder_sees_bf16_in_pyg_own_convs(arch):
    """Control: PyG's own convs in bf16 reduce bf16 messages, and the recorder sees it."""
    torch.manual_seed(0)
    model = PYG_STACKS[arch](12, 8, 2, 3, dropout=0.0).to(torch.bfloat16).train()
    x, edge_index, _ = _bf16_graph(weighted=False)
    with record_reductions(model) as (recorder, convs):
        model(x, edge_index)
    for name, records in _reductions_by_conv(recorder, convs).items():
        assert any(torch.bfloat16 in r.dtypes for r in records), (name, records)


@pytest.mark.parametrize("arch", ARCHS)
def test_control_recorder_sees_bf16_without_the_fp32_mixin(arch, monkeypatch):
    """Control: with ``Fp32AggregationMixin`` reduced to a pass-through, every conv of ours
    aggregates bf16 messages, and the recorder sees it (GCN's degrees and GAT's softmax stay
    fp32 through their own casts, so it is the message sum that turns bf16)."""
    def aggregate(self, inputs, index, ptr=None, dim_size=None):  # PyG looks it up by name
        return MessagePassing.aggregate(self, inputs, index, ptr, dim_size)

    monkeypatch.setattr(Fp32AggregationMixin, "aggregate", aggregate)
    monkeypatch.setattr(convs_module, "_propagate_is_observed", lambda conv: True)  # GCN per edge
    torch.manual_seed(0)
    model = build_model(arch, 12, 8, 3, 2, dropout=0.0,
                        heads=HEADS if arch == "gat" else 1).to(torch.bfloat16).train()
    x, edge_index, _ = _bf16_graph(weighted=False)
    with record_reductions(model) as (recorder, convs):
        model(x, edge_index)
    for name, records in _reductions_by_conv(recorder, convs).items():
        assert any(torch.bfloat16 in r.dtypes for r in records), (name, records)


# --- GCN's neighbour sum as one sparse product ---------------------------------------------

NORMALISATIONS = {"loops": {}, "improved": {"improved": True},
                  "no-loops": {"add_self_loops": False}}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "edge_weight"])
@pytest.mark.parametrize("kind", list(NORMALISATIONS))
def test_gcn_normalised_adjacency_equals_pyg_gcn_norm(kind, weighted):
    """The CPU CSR of ``D^-1/2 (A + I) D^-1/2`` equals PyG's ``gcn_norm`` edge list summed into
    a dense matrix: existing self-loops (weighted), duplicate edges, a node without in-edges."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    from gnnzero.models.convs import gcn_normalised_adjacency
    gen = torch.Generator().manual_seed(2)
    edge_index = torch.randint(0, 20, (2, 80), generator=gen)
    edge_index = torch.cat([edge_index, torch.tensor([[3, 3, 7, 4], [3, 3, 7, 21]])], dim=1)
    weight = torch.rand(edge_index.size(1), generator=gen) + 0.5 if weighted else None
    opts = NORMALISATIONS[kind]
    ours = gcn_normalised_adjacency(edge_index, weight, 23, **opts).toarray()
    ref_index, ref_weight = gcn_norm(edge_index, weight, 23, flow="source_to_target",
                                     dtype=torch.float32, **opts)
    reference = torch.zeros(23, 23).index_put_((ref_index[1], ref_index[0]), ref_weight,
                                               accumulate=True)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-6, atol=1e-7)
    assert int(reference[22].count_nonzero()) == (0 if kind == "no-loops" else 1)  # 22: no in-edge


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "edge_weight"])
def test_gcn_sparse_product_equals_pyg_gcnconv(weighted):
    """The fused ``A @ x`` equals PyG's per-edge GCNConv (same weights) in value and in
    gradient, duplicate edges included; a message hook or an explainer still gets PyG's
    per-edge path."""
    from torch_geometric.nn import GCNConv
    torch.manual_seed(0)
    x = torch.randn(30, 12, requires_grad=True)
    edge_index, weight = random_graph()
    edge_index = torch.cat([edge_index, edge_index[:, :5]], dim=1)       # 5 duplicates
    weight = torch.cat([weight, weight[:5]]) if weighted else None
    ours, pyg = GCNConvFp32(12, 8), GCNConv(12, 8)
    pyg.load_state_dict(ours.state_dict())
    out, ref = ours(x, edge_index, weight), pyg(x, edge_index, weight)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    ours_grads = torch.autograd.grad(out, [x, ours.lin.weight], grad)
    ref_grads = torch.autograd.grad(ref, [x, pyg.lin.weight], grad)
    for a, b in zip(ours_grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    with record_reductions(ours) as (recorder, _):
        ours(x, edge_index, weight)
    assert any("scatter" not in r.op for r in recorder.records), "the sparse product did not run"
    seen = []
    handle = ours.register_message_forward_hook(lambda *args: seen.append(args[-1]))
    assert torch.allclose(ours(x, edge_index, weight), ref, rtol=1e-5, atol=1e-6)
    handle.remove()
    assert seen and seen[0].size(0) > edge_index.size(1), "a hook sees every message (+ loops)"
    ours.explain = True                       # an explainer masks messages: per edge too
    assert convs_module._propagate_is_observed(ours)


@pytest.mark.parametrize("case", ["csr_adjacency", "mean_aggregation", "batched_x", "explained"])
def test_gcn_keeps_pyg_per_edge_path_where_the_product_does_not_apply(case):
    """A torch sparse adjacency, ``aggr="mean"``, a leading batch dimension and an explainer's
    edge mask all go through PyG's propagate, and equal PyG's GCNConv there."""
    from torch_geometric.explain.algorithm.utils import set_masks
    from torch_geometric.nn import GCNConv
    from torch_geometric.utils import to_torch_csr_tensor
    torch.manual_seed(0)
    x, (edge_index, _) = torch.randn(30, 12), random_graph()
    kwargs = {"aggr": "mean"} if case == "mean_aggregation" else {}
    ours, pyg = GCNConvFp32(12, 8, **kwargs), GCNConv(12, 8, **kwargs)
    pyg.load_state_dict(ours.state_dict())
    if case == "csr_adjacency":
        edge_index = to_torch_csr_tensor(edge_index.flip(0), size=(30, 30))   # adj_t
    if case == "batched_x":
        x = torch.randn(3, 30, 12)
    if case == "explained":   # the explainer's mask covers the edges after self-loops
        ours.add_self_loops = pyg.add_self_loops = False
        mask = torch.rand(edge_index.size(1), requires_grad=True)
        for conv in (ours, pyg):
            set_masks(conv, mask, edge_index, apply_sigmoid=True)
    out, ref = ours(x, edge_index), pyg(x, edge_index)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    if case == "explained":
        assert torch.autograd.grad(out.sum(), mask)[0].abs().sum() > 0, "the mask is applied"
