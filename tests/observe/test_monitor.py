"""Training monitor: gradient norms vs plain PyTorch at every ZeRO stage (in-process DeepSpeed,
one rank), activation statistics vs a hand-run forward, and NaN / exploding-gradient alerts."""
from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch

from gnnzero.data.loaders import with_node_fields
from gnnzero.engine.batches import node_loss
from gnnzero.models import build_model
from gnnzero.observe.monitor import (GLOBAL_NORM_LAYER, TOTAL_LAYER, TrainingMonitor,
                                     activation_stats, layer_of)
from tests.helpers import REPO, world_of_one_process_group


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _graph(ds):
    graph = with_node_fields(ds.structure(), ds)
    graph.loss_mask = graph.train_mask
    return graph


def _reference_norms(model, graph) -> dict[str, float]:
    model.zero_grad()
    node_loss(model(graph.x, graph.edge_index), graph).backward()
    squares: dict[str, float] = {}
    for name, param in model.named_parameters():
        squares[layer_of(name)] = squares.get(layer_of(name), 0.0) + float(param.grad.pow(2).sum())
    return {k: math.sqrt(v) for k, v in squares.items()}


def test_activation_stats_by_hand():
    x = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 3.0, 0.0, 0.0]])
    stats = activation_stats(x)
    assert stats["mean"] == pytest.approx(6 / 8)
    assert stats["std"] == pytest.approx(float(torch.tensor(x.flatten().tolist()).std()))
    assert stats["zero_fraction"] == pytest.approx(5 / 8)
    assert stats["dead_fraction"] == pytest.approx(2 / 4)  # channels 0 and 2 never fire
    assert layer_of("convs.1.lin_l.weight") == "convs.1"
    assert layer_of("module.lin.bias") == "lin"


@pytest.fixture
def one_rank_process_group():
    """An in-process world of one (rank, world, device)."""
    with world_of_one_process_group() as group:
        yield group


def test_gradient_norms_match_plain_pytorch_at_every_zero_stage(small_synthetic, tmp_path,
                                                                one_rank_process_group):
    """Per-layer norms read through DeepSpeed (stages 0-3, incl. ZeRO-3 partitioned params)
    equal plain ``loss.backward()`` norms; their total equals DeepSpeed's own global norm."""
    from gnnzero.engine.runtime import initialize_engine

    graph = _graph(small_synthetic)
    torch.manual_seed(0)
    base = build_model("sage", small_synthetic.num_features, 16, small_synthetic.num_classes, 2,
                       dropout=0.0)
    want = _reference_norms(copy.deepcopy(base), graph)
    plain = copy.deepcopy(base).train()
    with torch.no_grad():  # the hidden layer's activations, by hand
        hidden = plain.act(plain.convs[0](graph.x, graph.edge_index))
    want_act = activation_stats(hidden)
    for stage in (0, 1, 2, 3):
        config = json.loads((REPO / "ds_configs" / f"zero{stage}.json").read_text())
        engine, _, _ = initialize_engine(copy.deepcopy(base), config)
        out = tmp_path / f"zero{stage}"
        monitor = TrainingMonitor(engine, str(out), every=1)
        engine.train()
        monitor.start_forward(1)
        engine.backward(node_loss(engine(graph.x, graph.edge_index), graph))
        got = monitor.record_gradients(engine, 1)
        engine.step()
        monitor.record_global_norm(engine, 1)
        monitor.close()
        assert set(got) == set(want) | {TOTAL_LAYER}
        for layer, value in want.items():
            assert got[layer] == pytest.approx(value, rel=1e-5), (stage, layer)
        grads = {r["layer"]: float(r["grad_norm"]) for r in _rows(out / "grad_norms.csv")}
        assert grads[TOTAL_LAYER] == pytest.approx(math.sqrt(sum(v * v for v in want.values())),
                                                   rel=1e-5)
        if GLOBAL_NORM_LAYER in grads:  # DeepSpeed computes it when clipping (all configs here)
            assert grads[GLOBAL_NORM_LAYER] == pytest.approx(grads[TOTAL_LAYER], rel=1e-5)
        elif stage:
            pytest.fail(f"no DeepSpeed global norm at stage {stage}")
        (act,) = _rows(out / "activations.csv")
        for key in ("mean", "std", "zero_fraction", "dead_fraction"):
            assert float(act[key]) == pytest.approx(want_act[key], rel=1e-5, abs=1e-7), key
        assert monitor.alerts == []


def test_nan_and_exploding_gradients_are_reported_with_layer_and_step(small_synthetic, tmp_path,
                                                                      capsys):
    graph = _graph(small_synthetic)
    torch.manual_seed(0)
    model = build_model("gcn", small_synthetic.num_features, 16, small_synthetic.num_classes, 2)
    monitor = TrainingMonitor(model, str(tmp_path), every=1)
    for step in range(1, 6):
        model.zero_grad()
        monitor.start_forward(step)
        node_loss(model(graph.x, graph.edge_index), graph).backward()
        if step == 4:
            for p in model.convs[0].parameters():
                p.grad *= 1e3  # 1000x the usual norm, still below max_grad_norm
        if step == 5:
            model.convs[1].bias.grad[0] = float("inf")
        monitor.record_gradients(None, step)
    monitor.close()
    assert len(monitor.alerts) == 2, monitor.alerts
    assert "convs.0" in monitor.alerts[0] and "step 4" in monitor.alerts[0]
    assert "exploding" in monitor.alerts[0]
    assert "convs.1" in monitor.alerts[1] and "step 5" in monitor.alerts[1]
    assert "inf" in monitor.alerts[1]
    err = capsys.readouterr().err
    assert "warning: gradient of layer convs.1 is inf at optimizer step 5" in err
    assert len(_rows(tmp_path / "activations.csv")) == 5  # one hidden layer, every step


def test_tensorboard_scalars_read_back_with_tensorboards_reader(small_synthetic, tmp_path):
    """The monitor's TensorBoard events hold the CSV's gradient norms and activation means,
    step for step, read with tensorboard's own EventAccumulator."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    graph = _graph(small_synthetic)
    torch.manual_seed(0)
    model = build_model("sage", small_synthetic.num_features, 16, small_synthetic.num_classes, 2)
    monitor = TrainingMonitor(model, str(tmp_path), every=2)
    for step in range(1, 7):
        model.zero_grad()
        monitor.start_forward(step)
        node_loss(model(graph.x, graph.edge_index), graph).backward()
        monitor.record_gradients(None, step)
    monitor.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    grads = {(r["layer"], int(r["step"])): float(r["grad_norm"])
             for r in _rows(tmp_path / "grad_norms.csv")}
    for tag in ("grad_norm/convs.0", "grad_norm/convs.1"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [2, 4, 6]
        layer = tag.split("/", 1)[1]
        for s in scalars:
            assert s.value == pytest.approx(grads[(layer, s.step)], rel=1e-6)
    activation = events.Scalars("activation/mean/layer0")
    assert [s.step for s in activation] == [2, 4, 6]
    means = [float(r["mean"]) for r in _rows(tmp_path / "activations.csv")]
    assert [s.value for s in activation] == pytest.approx(means, rel=1e-6)
