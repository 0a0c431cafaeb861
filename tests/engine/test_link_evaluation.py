"""Pair scores from endpoint rows: the decoder on the rows of each pair's two nodes; a
weightless decoder scores in fp32 even for a bf16 engine (no rounding into ties)."""
from __future__ import annotations

import torch

from gnnzero.engine.link_evaluation import EndpointRows, score_pairs
from gnnzero.models import build_model
from gnnzero.models.link import build_link_model


def _rows(num_nodes: int = 50, width: int = 8):
    g = torch.Generator().manual_seed(0)
    nodes = torch.arange(0, num_nodes, 2)
    rows = EndpointRows(nodes, num_nodes)
    rows.put(nodes, 3.0 + torch.rand(nodes.numel(), width, generator=g))   # scores ~ 8 x 10
    pairs = nodes[torch.randint(0, nodes.numel(), (2, 200), generator=g)]
    return rows, pairs


def test_dot_scores_are_fp32_for_a_bf16_engine():
    rows, pairs = _rows()
    model = build_link_model(build_model("gcn", 4, 8, 8, 2), "dot", 8).to(torch.bfloat16)
    scores = score_pairs(model, rows, pairs, torch.device("cpu"), torch.bfloat16)
    z = rows.rows
    expected = (z[rows.index(pairs)[0]] * z[rows.index(pairs)[1]]).sum(-1)
    torch.testing.assert_close(torch.from_numpy(scores), expected, rtol=1e-6, atol=1e-6)
    assert len(set(scores.tolist())) == len(set(expected.tolist()))   # no bf16 ties


def test_mlp_scores_use_the_decoders_dtype():
    rows, pairs = _rows()
    torch.manual_seed(0)
    model = build_link_model(build_model("gcn", 4, 8, 8, 2), "mlp", 8)
    scores = score_pairs(model, rows, pairs, torch.device("cpu"), torch.float32)
    z = rows.rows
    local = rows.index(pairs)
    with torch.no_grad():
        expected = model.decoder(z[local[0]], z[local[1]])
    torch.testing.assert_close(torch.from_numpy(scores), expected)
