"""Evaluation: metrics vs scikit-learn, Wilson interval vs its formula, layer-wise inference vs
the plain full-graph forward, and the sampled estimate vs the exact figure."""
from __future__ import annotations

import math

import pytest
import torch

from gnnzero.engine.evaluation import (confusion_matrix, evaluate_layerwise, layerwise_inference,
                                       metrics_from_confusion, evaluate_sampled,
                                       neighbourhood_batches, wilson_interval)
from gnnzero.errors import GnnZeroError
from gnnzero.models import build_model, forward_batch

pytestmark = pytest.mark.filterwarnings("ignore:.*pyg-lib:UserWarning")


def test_metrics_match_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    y_true = torch.randint(0, 6, (500,), generator=gen)
    y_pred = torch.where(torch.rand(500, generator=gen) < 0.6, y_true,
                         torch.randint(0, 6, (500,), generator=gen))
    y_true[y_true == 4] = 3  # class 4 has no support, but is predicted
    y_pred[y_pred == 5] = 0  # class 5 is never predicted
    got = metrics_from_confusion(confusion_matrix(y_true, y_pred, 7))  # class 6: absent entirely
    t, p = y_true.numpy(), y_pred.numpy()
    assert got["accuracy"] == pytest.approx(sklearn.accuracy_score(t, p))
    assert got["micro_f1"] == pytest.approx(sklearn.f1_score(t, p, average="micro"))
    assert got["macro_f1"] == pytest.approx(sklearn.f1_score(t, p, average="macro",
                                                             zero_division=0))
    recall = sklearn.recall_score(t, p, labels=list(range(7)), average=None, zero_division=0)
    for c, value in enumerate(got["per_class_accuracy"]):
        if c in (4, 6):
            assert value is None
        else:
            assert value == pytest.approx(recall[c])


def test_wilson_interval_matches_formula():
    for correct, total in ((0, 20), (37, 50), (412, 600), (600, 600)):
        z = 1.959963984540054
        p = correct / total
        centre = (p + z * z / (2 * total)) / (1 + z * z / total)
        half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total ** 2))
        low, high = wilson_interval(correct, total)
        assert low == pytest.approx(centre - half, abs=1e-9)
        assert high == pytest.approx(centre + half, abs=1e-9)


CASES = [("gcn", {}), ("sage", {}), ("gat", {"heads": 2}), ("gin", {}), ("pinsage", {}),
         ("sage", {"jk": "cat"}), ("gcn", {"norm": "batch", "activation_checkpointing": True}),
         ("gat", {"jk": "max", "num_layers": 3})]


@pytest.mark.parametrize("arch,kwargs", CASES, ids=[f"{a}-{'-'.join(k)}" for a, k in CASES])
def test_layerwise_inference_equals_full_graph_forward(small_synthetic, arch, kwargs):
    """Layer-wise mini-batch inference (several 1-hop batches) == the plain whole-graph forward."""
    ds = small_synthetic
    kwargs = dict(kwargs)
    layers = kwargs.pop("num_layers", 2)
    torch.manual_seed(0)
    model = build_model(arch, ds.num_features, 16, ds.num_classes, layers, **kwargs).eval()
    if kwargs.get("norm") == "batch":  # non-trivial running statistics
        for norm in (n for n in model.norms if hasattr(n, "module")):
            norm.module.running_mean.uniform_(-0.1, 0.1)
            norm.module.running_var.uniform_(0.5, 2.0)
    out = layerwise_inference(model, ds, torch.device("cpu"), batch_size=700, return_hidden=True)
    with torch.no_grad():
        reference = model(ds.features.rows(torch.arange(ds.num_nodes)), ds.edge_index)
    assert out.node_ids.tolist() == list(range(ds.num_nodes))
    torch.testing.assert_close(out.logits, reference, atol=1e-5, rtol=1e-5)
    assert out.hidden.size(0) == ds.num_nodes


NEIGHBOURHOOD_CASES = [("gcn", {}), ("sage", {}), ("gat", {"heads": 2}), ("pinsage", {}),
                       ("gin", {"num_layers": 3})]


@pytest.mark.parametrize("arch,kwargs", NEIGHBOURHOOD_CASES,
                         ids=[f"{a}-{'-'.join(k)}" for a, k in NEIGHBOURHOOD_CASES])
def test_sampled_neighbourhoods_give_the_full_graph_logits(small_synthetic, arch, kwargs,
                                                          monkeypatch):
    """Each seed's logits from its full k-hop neighbourhood, read from the CSR (GCN: whole-graph
    degrees; PinSAGE: its importance graph) == the plain whole-graph forward's."""
    ds = small_synthetic
    kwargs = dict(kwargs)
    layers = kwargs.pop("num_layers", 2)
    torch.manual_seed(0)
    model = build_model(arch, ds.num_features, 16, ds.num_classes, layers, **kwargs).eval()
    with torch.no_grad():
        reference = model(ds.features.rows(torch.arange(ds.num_nodes)), ds.edge_index)
    seeds = torch.randperm(ds.num_nodes, generator=torch.Generator().manual_seed(1))[:300]
    batches = [(seeds[:170].tolist(), 170), (seeds[170:].tolist(), 130)]
    if arch != "pinsage":      # PinSAGE's importance graph is built from the whole edge list

        def no_edge_list(self):
            raise AssertionError("sampled evaluation built the whole edge list")
        monkeypatch.setattr(type(ds), "edge_index", property(no_edge_list))
    with torch.no_grad():
        for batch, keep in neighbourhood_batches(model, ds, batches, torch.device("cpu"),
                                                 torch.float32):
            assert batch.num_nodes < ds.num_nodes               # a neighbourhood, not the graph
            logits = forward_batch(model, batch)[:keep]
            torch.testing.assert_close(logits, reference[batch.n_id[:keep]], atol=1e-5,
                                       rtol=1e-5)


def test_layerwise_refuses_graph_level_norm(small_synthetic):
    model = build_model("sage", small_synthetic.num_features, 16, small_synthetic.num_classes, 2,
                        norm="layer")
    with pytest.raises(GnnZeroError, match="LayerNorm"):
        layerwise_inference(model, small_synthetic, torch.device("cpu"))


def _train_plain(ds, arch: str, epochs: int = 40):
    torch.manual_seed(0)
    model = build_model(arch, ds.num_features, 32, ds.num_classes, 2, dropout=0.2)
    x = ds.features.rows(torch.arange(ds.num_nodes))
    mask = ds.masks["train_mask"]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, ds.edge_index)[mask], ds.y[mask]).backward()
        opt.step()
    return model.eval()


def test_sampled_evaluation_agrees_with_exact(small_synthetic):
    ds = small_synthetic
    model = _train_plain(ds, "gcn")
    exact = evaluate_layerwise(model, ds, torch.device("cpu"))
    x = ds.features.rows(torch.arange(ds.num_nodes))
    with torch.no_grad():
        pred = model(x, ds.edge_index).argmax(-1)
    val = ds.masks["val_mask"]
    assert exact["val"]["correct"] == int((pred[val] == ds.y[val]).sum())  # plain reference
    assert 0.3 < exact["val"]["accuracy"] < 0.99  # a model that is neither random nor perfect
    # All val nodes "sampled": k-hop predictions are exact, so the counts match exactly.
    everything = evaluate_sampled(model, ds, 10**6, torch.device("cpu"), batch_size=256)
    assert everything["total"] == everything["population"] == int(val.sum())
    assert everything["correct"] == exact["val"]["correct"]
    # A random 40% sample: the exact figure lies inside the 95% interval for every seed tried.
    for seed in range(3):
        sampled = evaluate_sampled(model, ds, 240, torch.device("cpu"), seed=seed)
        assert sampled["total"] == 240
        assert sampled["ci_low"] <= exact["val"]["accuracy"] <= sampled["ci_high"], sampled


def test_whole_graph_batch_is_never_served_from_a_freed_dataset():
    # Datasets built one after another in a process (benchmark runs) reuse freed ids; a
    # cache keyed by id() served the previous dataset's features (PCA runs lost 30 points).
    import dataclasses

    from gnnzero.data.datasets import load_synthetic
    from gnnzero.data.feature_store import DenseFeatureStore
    from gnnzero.engine.evaluation import _full_graph

    base = load_synthetic(200, seed=0, feature_format="dense")
    for i in range(20):
        store = DenseFeatureStore()
        store.put_tensor(torch.full((200, 3), float(i)), group_name=None, attr_name="x",
                         index=None)
        dataset = dataclasses.replace(base, features=store)
        assert torch.all(_full_graph(dataset).x == i), i
        del dataset, store


def test_macro_ovr_roc_auc_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    from gnnzero.utils.stats import macro_ovr_auc

    gen = torch.Generator().manual_seed(3)
    y = torch.randint(0, 5, (400,), generator=gen)
    logits = torch.randn(400, 5, generator=gen) + 1.5 * torch.nn.functional.one_hot(y, 5)
    probs = logits.softmax(-1)
    assert macro_ovr_auc(y.numpy(), probs.numpy()) == pytest.approx(
        sklearn.roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", average="macro"),
        abs=1e-12)


@pytest.mark.parametrize("method", ["full-graph", "layerwise"])
def test_final_evaluation_reports_the_nodes_macro_roc_auc(small_synthetic, method):
    """The val / test ROC-AUC of an exact evaluation is scikit-learn's on the softmax of the
    whole-graph forward, for both the whole-graph and the layer-wise path."""
    sklearn = pytest.importorskip("sklearn.metrics")
    from gnnzero.engine.evaluation import evaluate

    ds = small_synthetic
    torch.manual_seed(0)
    model = build_model("sage", ds.num_features, 16, ds.num_classes, 2).eval()
    with torch.no_grad():
        probs = model(ds.features.rows(torch.arange(ds.num_nodes)), ds.edge_index).softmax(-1)
    result = evaluate(method, model, ds, torch.device("cpu"), roc_auc=True)
    for split in ("val", "test"):
        mask = ds.masks[f"{split}_mask"]
        expected = sklearn.roc_auc_score(ds.y[mask].numpy(), probs[mask].numpy(),
                                         multi_class="ovr", average="macro")
        assert result[split]["roc_auc_macro_ovr"] == pytest.approx(expected, abs=1e-5)
    assert "roc_auc_macro_ovr" not in result["train"]
    assert "roc_auc_macro_ovr" not in evaluate(method, model, ds, torch.device("cpu"))["test"]
