"""Heterogeneous evaluation: the whole-graph and full-neighbourhood paths equal a forward of
PyG's ``to_hetero`` model over the whole ``HeteroData``, scored by scikit-learn."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("torch_sparse")

from sklearn.metrics import accuracy_score, f1_score, roc_auc_score  # noqa: E402

from gnnzero.data.hetero import load_hetero, schema_graph  # noqa: E402
from gnnzero.engine.hetero_evaluation import evaluate_hetero, evaluate_hetero_sampled  # noqa: E402
from gnnzero.models import build_hetero_model  # noqa: E402
from gnnzero.tasks.hetero import HeteroNodeTask  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset():
    return load_hetero("synthetic-hetero", None, 500, 2, num_classes=4)


def _model(dataset, arch, **kwargs):
    torch.manual_seed(0)
    model = build_hetero_model(arch, schema_graph(dataset.data), 16, dataset.num_classes, 2,
                               dropout=0.3, **kwargs)
    return model.train()   # evaluation must switch dropout off itself


def _reference(model, dataset):
    model.eval()
    with torch.no_grad():
        logits = model(dataset.data.x_dict, dataset.data.edge_index_dict)["paper"]
    model.train()
    return logits


@pytest.mark.parametrize("arch, kwargs", [("sage", {}), ("gat", {"heads": 2}),
                                          ("sage", {"rank": 3})])
@pytest.mark.parametrize("method, batch", [("full-graph", 4096), ("neighbourhoods", 37)])
def test_exact_hetero_evaluation_equals_a_whole_graph_forward(dataset, arch, kwargs, method,
                                                              batch):
    model = _model(dataset, arch, **kwargs)
    logits = _reference(model, dataset)
    result = evaluate_hetero(method, model, dataset, CPU, batch_size=batch, roc_auc=True)
    assert model.training
    y = dataset.y.numpy()
    pred = logits.argmax(1).numpy()
    for split in ("train", "val", "test"):
        mask = dataset.masks[f"{split}_mask"].numpy()
        assert result[split]["method"] == method
        assert result[split]["total"] == int(mask.sum())
        assert result[split]["accuracy"] == pytest.approx(accuracy_score(y[mask], pred[mask]))
        assert result[split]["macro_f1"] == pytest.approx(
            f1_score(y[mask], pred[mask], average="macro"))
    mask = dataset.masks["test_mask"].numpy()
    probs = logits.softmax(1).numpy()[mask]
    assert result["test"]["roc_auc_macro_ovr"] == pytest.approx(
        roc_auc_score(y[mask], probs, multi_class="ovr", average="macro"), abs=1e-6)


def test_sampled_hetero_validation_scores_the_sample_exactly(dataset):
    model = _model(dataset, "sage")
    pred = _reference(model, dataset).argmax(1)
    val = dataset.masks["val_mask"]
    whole = evaluate_hetero_sampled(model, dataset, 10_000, CPU, batch_size=29)
    assert whole["total"] == int(val.sum()) == whole["population"]
    assert whole["correct"] == int((pred[val] == dataset.y[val]).sum())
    part = evaluate_hetero_sampled(model, dataset, 40, CPU, seed=1, epoch=3)
    assert part["total"] == 40 and part["ci_low"] <= part["accuracy"] <= part["ci_high"]
    assert part == evaluate_hetero_sampled(model, dataset, 40, CPU, seed=1, epoch=3)


def test_the_auto_rule_keeps_large_graphs_off_the_whole_graph_path():
    def rule(num_nodes, sampled=0, method="auto"):
        graph = SimpleNamespace(num_nodes=num_nodes, target="paper")
        evaluation = SimpleNamespace(eval_method=method, sampled_eval_nodes=sampled)
        return HeteroNodeTask.per_epoch_rule(None, graph, evaluation)

    assert rule(1_000)[0] == "full-graph"
    method, line = rule(2_000_000)
    assert method == "neighbourhoods" and "full neighbourhood" in line and "paper" in line
    assert rule(1_000, sampled=64)[0] == "sampled"
    assert rule(2_000_000, method="full-graph")[0] == "full-graph"
    assert HeteroNodeTask().final_method(None, SimpleNamespace(num_nodes=2_000_000))[0] \
        == "neighbourhoods"
