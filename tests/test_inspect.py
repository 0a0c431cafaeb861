"""End to end: a 2-rank ZeRO-3 launch with monitoring and sampled evaluation, checked against
a plain-PyTorch reference built from its checkpoint; then ``python -m gnnzero.inspect`` on it,
and its one-line errors."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, read_metrics, run_deepspeed

# Every test here reads the 2-rank DeepSpeed run that the zero3_run fixture launches.
pytestmark = pytest.mark.e2e
NODES = 1500


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3_run")
    proc = run_deepspeed("launch/train.py", [
        "--ds_config", "ds_configs/zero3.json", "--num-nodes", str(NODES), "--epochs", "2",
        "--hidden", "16", "--num-parts", "8", "--clusters-per-batch", "2",
        "--output-dir", str(out), "--cache-dir", str(out / "cache"),
        "--monitor-every", "1", "--sampled-eval-nodes", "200"], num_procs=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _reference(run_dir):
    """The plain model with the checkpoint's fp32 weights, whole-graph forward."""
    from gnnzero.inspect import checkpoint_dir, load_run_dataset, load_run_model

    from gnnzero.config import read_run_config

    metrics, config = read_metrics(run_dir), read_run_config(str(run_dir))
    dataset = load_run_dataset(config)
    model = load_run_model(config, dataset, checkpoint_dir(str(run_dir)))
    with torch.no_grad():
        logits = model(dataset.features.rows(torch.arange(dataset.num_nodes)), dataset.edge_index)
    return metrics, dataset, logits.argmax(-1)


def test_zero3_two_ranks_exact_evaluation_and_monitor(zero3_run):
    sklearn = pytest.importorskip("sklearn.metrics")
    metrics, dataset, pred = _reference(zero3_run)
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 3
    for split in ("train", "val", "test"):
        got = metrics["evaluation"][split]
        mask = dataset.masks[f"{split}_mask"]
        y, p = dataset.y[mask].numpy(), pred[mask].numpy()
        assert got["method"] == "layerwise"
        assert got["correct"] == int((p == y).sum()), split  # exact, both ranks together
        assert got["macro_f1"] == pytest.approx(sklearn.f1_score(y, p, average="macro",
                                                                 zero_division=0))
    for entry in metrics["epochs"]:
        sampled = entry["sampled_val"]
        assert sampled["total"] == 200 and sampled["ci_low"] < sampled["accuracy"] < sampled["ci_high"]
    # Per-layer norms gathered from ZeRO-3 partitions add up to DeepSpeed's own global norm.
    with open(zero3_run / "monitor" / "grad_norms.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == list(range(1, metrics["optimizer_steps"] + 1))
    for step in steps:
        norms = {r["layer"]: float(r["grad_norm"]) for r in rows if int(r["step"]) == step}
        layers = [v for k, v in norms.items() if k.startswith("convs.")]
        assert len(layers) == 2
        assert math.sqrt(sum(v * v for v in layers)) == pytest.approx(
            norms["deepspeed_global_norm"], rel=1e-4)
    assert metrics["monitor"]["alerts"] == []


def test_inspect_writes_pictures_and_explanation(zero3_run):
    node = 7
    proc = subprocess.run([sys.executable, "-m", "gnnzero.inspect", str(zero3_run), "--curves",
                           "--embeddings", "--subgraph", str(node), "--explain", str(node),
                           "--max-points", "300", "--explain-epochs", "20"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = zero3_run / "inspect"
    for name in ("curves.png", "grad_norms.png", "embeddings.png", f"subgraph_{node}.png",
                 f"explain_{node}.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    explanation = json.loads((folder / f"explain_{node}.json").read_text())
    _, dataset, pred = _reference(zero3_run)
    assert explanation["predicted_class"] == int(pred[node])
    assert explanation["true_class"] == int(dataset.y[node])
    assert explanation["top_edges"] and explanation["top_features"]
    neighbours = set(dataset.edge_index[0, dataset.edge_index[1] == node].tolist())
    top = explanation["top_edges"][0]  # the strongest edge feeds the node or one of its inputs
    assert top["target"] == node or top["target"] in neighbours


def test_pgexplainer_explains_within_each_nodes_computation_graph(zero3_run, tmp_path):
    """PGExplainer (one mask network for both nodes): every edge it ranks lies in the explained
    node's 2-hop computation graph (PyG masks the rest to zero), masks are in [0, 1], and the
    prediction it explains is the model's."""
    from torch_geometric.utils import k_hop_subgraph

    nodes = [7, 11]
    proc = subprocess.run([sys.executable, "-m", "gnnzero.inspect", str(zero3_run), "--explain",
                           *map(str, nodes), "--explainer", "pg", "--explain-epochs", "5",
                           "--pg-train-nodes", "6", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(PGExplainer)" in proc.stdout
    _, dataset, pred = _reference(zero3_run)
    for node in nodes:
        assert (tmp_path / f"explain_{node}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        explanation = json.loads((tmp_path / f"explain_{node}.json").read_text())
        assert explanation["explainer"] == "pg" and explanation["top_features"] == []
        assert explanation["predicted_class"] == int(pred[node])
        _, reach, _, _ = k_hop_subgraph(node, 2, dataset.edge_index,
                                        num_nodes=dataset.num_nodes)
        reach = {tuple(e) for e in reach.t().tolist()}
        assert explanation["top_edges"]
        for edge in explanation["top_edges"]:
            assert (edge["source"], edge["target"]) in reach, edge
            assert 0.0 < edge["importance"] <= 1.0


def _error_line(argv, capsys) -> str:
    from gnnzero.inspect import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_inspect_bad_input_is_one_line(zero3_run, tmp_path, capsys):
    err = _error_line([str(zero3_run), "--subgraph", str(NODES)], capsys)
    assert f"node {NODES} is out of range" in err and f"0..{NODES - 1}" in err
    bare = tmp_path / "no_checkpoint"
    bare.mkdir()
    shutil.copy(zero3_run / "metrics.json", bare / "metrics.json")
    err = _error_line([str(bare), "--embeddings"], capsys)
    assert "has no checkpoint" in err
    err = _error_line([str(tmp_path / "missing"), "--curves"], capsys)
    assert "does not exist" in err


# ------------------------------------------------------------- every kind of run reopens

KIND_FLAGS = {
    "pca-cluster": ["--pca-components", "12", "--loader", "cluster", "--num-parts", "6"],
    "ckpt-shared-lowrank-saint": ["--activation-checkpointing", "--share-weights", "--rank", "4",
                                  "--layers", "4", "--loader", "saint-rw", "--batch-size",
                                  "100", "--saint-steps", "2"],
    "neighbor-gat": ["--loader", "neighbor", "--batch-size", "200", "--model", "gat",
                     "--heads", "2"],
    "full-gcn": ["--loader", "full", "--model", "gcn"],
}


@pytest.mark.parametrize("kind", sorted(KIND_FLAGS))
def test_inspect_reopens_every_kind_of_run(kind, tmp_path):
    """Train one epoch of each kind, then inspect: the rebuilt model's predictions reproduce
    the run's own final (layer-wise, exact) test accuracy, and the pictures are written."""
    from gnnzero.inspect import main
    from tests.helpers import run_train

    out = tmp_path / kind
    proc = run_train(["--ds_config", "ds_configs/zero1.json", "--num-nodes", "600",
                      "--hidden", "16", "--epochs", "1", "--output-dir", str(out),
                      "--cache-dir", str(tmp_path / "cache"), *KIND_FLAGS[kind]], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics["evaluation"]["test"]["method"] == "layerwise"
    assert main([str(out), "--embeddings", "--subgraph", "5", "--max-points", "50"]) == 0
    assert (out / "inspect" / "embeddings.png").stat().st_size > 0
    assert (out / "inspect" / "subgraph_5.png").stat().st_size > 0

    from gnnzero.config import read_run_config
    from gnnzero.engine.evaluation import layerwise_inference
    from gnnzero.inspect import checkpoint_dir, load_run_dataset, load_run_model

    config = read_run_config(str(out))
    dataset = load_run_dataset(config)
    model = load_run_model(config, dataset, checkpoint_dir(str(out)))
    pred = layerwise_inference(model, dataset, torch.device("cpu")).logits.argmax(-1)
    mask = dataset.masks["test_mask"]
    accuracy = float((pred[mask] == dataset.y[mask]).float().mean())
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)  # float32 ratio
