"""Batches and the loss: casting to the compute dtype, a bf16 batch through a bf16 model, the
node loss in closed form and as GraphSAINT's node-norm weighted sum."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data, HeteroData

from gnnzero.data import LoaderOptions, build_loader
from gnnzero.engine.batches import node_loss, prepare_batch


def test_prepare_batch_casts_floating_features_only():
    batch = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1], [1, 2]]),
                 edge_weight=torch.rand(2), loss_weight=torch.rand(4), y=torch.tensor([0, 1, 0, 1]))
    out = prepare_batch(batch, torch.device("cpu"), torch.bfloat16)
    assert out.x.dtype == torch.bfloat16
    assert out.edge_weight.dtype == out.loss_weight.dtype == torch.float32
    assert out.y.dtype == out.edge_index.dtype == torch.int64
    hetero = HeteroData()
    hetero["paper"].x = torch.randn(3, 2)
    hetero["author"].x = torch.randn(2, 2)
    hetero["author", "writes", "paper"].edge_index = torch.tensor([[0, 1], [1, 2]])
    hetero["author", "writes", "paper"].edge_attr = torch.randn(2, 5)
    out = prepare_batch(hetero, torch.device("cpu"), torch.float16)
    assert out["paper"].x.dtype == out["author"].x.dtype == torch.float16
    assert out["author", "writes", "paper"].edge_attr.dtype == torch.float16


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "gin", "pinsage"])
def test_bf16_batch_runs_through_a_bf16_model(arch):
    """The failure users report ("expected scalar type Float but found BFloat16") cannot happen,
    with GraphSAINT edge weights kept in fp32."""
    from gnnzero.models import build_model, forward_batch

    model = build_model(arch, 3, 8, 2, 2, dropout=0.0).to(torch.bfloat16)
    batch = Data(x=torch.randn(5, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]),
                 edge_weight=torch.rand(3))
    out = forward_batch(model, prepare_batch(batch, torch.device("cpu"), torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (5, 2)


def test_node_loss_closed_forms():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    mask = torch.tensor([True, False, True, True, False, True])
    batch = Data(y=y, loss_mask=mask)
    ce = [-F.log_softmax(logits[i].detach(), -1)[y[i]].item() for i in range(6)]
    expected_mean = sum(ce[i] for i in range(6) if mask[i]) / int(mask.sum())
    assert node_loss(logits, batch).item() == pytest.approx(expected_mean, rel=1e-6)
    # GraphSAINT (PyG examples/graph_saint.py): sum over training nodes of node_norm * CE.
    batch.loss_weight = torch.tensor([0.5, 9.0, 2.0, 0.25, 9.0, 1.0])
    expected = sum(batch.loss_weight[i].item() * ce[i] for i in range(6) if mask[i])
    assert node_loss(logits.bfloat16(), batch).item() == pytest.approx(expected, rel=1e-2)
    assert node_loss(logits, batch).item() == pytest.approx(expected, rel=1e-6)
    # No training node in the batch: zero loss, but a graph that still reaches the logits.
    batch.loss_mask = torch.zeros(6, dtype=torch.bool)
    loss = node_loss(logits, batch)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_saint_loss_is_node_norm_weighted_sum_over_train_nodes(graph, tmp_path):
    opts = LoaderOptions(kind="saint-rw", batch_size=100, walk_length=2, sample_coverage=5,
                         cache_dir=str(tmp_path))
    batch = next(iter(build_loader(graph, opts).epoch(0)))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch.num_nodes, graph.num_classes, generator=gen)
    expected = 0.0                                       # reference: a plain loop, GraphSAINT eq. 6
    for v in batch.train_mask.nonzero().view(-1).tolist():
        log_p = logits[v] - torch.logsumexp(logits[v], dim=0)
        expected += float(batch.node_norm[v]) * -float(log_p[batch.y[v]])
    assert float(node_loss(logits, batch)) == pytest.approx(expected, rel=1e-5)
