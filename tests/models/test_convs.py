"""Convolutions: every architecture takes edge weights, unit weights equal none, and bf16
aggregation stays close to fp32 on very high-degree nodes."""
from __future__ import annotations

import pytest
import torch

from gnnzero.models import build_model
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
def test_bf16_aggregation_stays_close_to_fp32_on_a_star(arch):
    from gnnzero.models import build_model

    x, edge_index = star_graph()
    torch.manual_seed(0)
    model = build_model(arch, 8, 16, 4, 2, dropout=0.0).eval()
    with torch.no_grad():
        ref = model(x, edge_index)
        out = model.to(torch.bfloat16)(x.bfloat16(), edge_index)
    assert out.dtype == torch.bfloat16
    assert _relative_error(out[0], ref[0]) < 2e-2, "hub node"
    assert _relative_error(out[1:], ref[1:]) < 2e-2, "leaves"
