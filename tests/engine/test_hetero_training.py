"""Heterogeneous graphs through ``launch/train.py`` and DeepSpeed: 2 ranks at ZeRO-2 and
ZeRO-3 reproduce a plain PyTorch loop over PyG's ``to_hetero`` model step by step; 1 rank
trains a user's ``HeteroData`` file (ZeRO-0) and bf16 ZeRO-1 with sampled validation."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.data.test_hetero import _labelled_file
from tests.engine.test_trainer import RTOL, _two_rank_ds_config
from tests.helpers import REPO, plain_data_parallel, read_metrics, run_deepspeed, run_train

pytest.importorskip("torch_sparse")


def _hetero_loss(model, batch):
    """Cross-entropy of the paper seeds, straight from the ``to_hetero`` model's outputs."""
    logits = model(batch.x_dict, batch.edge_index_dict)["paper"]
    seeds = batch["paper"].batch_size
    return F.cross_entropy(logits[:seeds], batch["paper"].y[:seeds])


def _args(tmp_path, config, *extra):
    """Flags of a small run.  Dense-ish features (8 of 32 words a node): with rare words, an
    input weight's gradient nearly cancels, and Adam turns the reduction order's rounding of
    it into a visible step (eps = 1e-8), which no tolerance tied to the gradients can allow."""
    return ["--ds_config", str(config), "--dataset", "synthetic-hetero", "--num-nodes", "400",
            "--num-classes", "4", "--num-features", "32", "--words-per-node", "8",
            "--hidden", "16", "--dropout", "0", "--loader", "neighbor",
            "--num-neighbors=-1,-1", "--batch-size", "48", "--epochs", "2",
            "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
            *extra]


@pytest.mark.e2e
@pytest.mark.parametrize("stage, extra", [
    (2, ["--model", "gat", "--heads", "2"]),
    (3, ["--model", "sage", "--layers", "4", "--num-neighbors=-1,-1,-1,-1", "--rank", "4",
         "--share-weights"]),
])
def test_two_ranks_reproduce_plain_pytorch_on_a_heterogeneous_graph(tmp_path, stage, extra):
    """All-neighbour fan-outs make the batches deterministic, so the plain loop sees the
    same ones; every loss and every final parameter must match.

    (A 4-layer GAT is left out of the parameter check: a head whose every edge sits in
    LeakyReLU's linear part has an exactly-zero ``att_dst`` gradient, a constant shift under
    the softmax; Adam, with eps 1e-8, turns its 1e-11 rounding noise into steps that differ
    between any two reduction orders.)"""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    config = _two_rank_ds_config(stage, tmp_path)
    args = _args(tmp_path, config, *extra)
    proc = run_deepspeed("launch/train.py", args, num_procs=2, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "per-epoch validation: full-graph" in proc.stdout
    metrics = read_metrics(tmp_path / "run")
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == stage
    assert metrics["dataset"]["heterogeneous"] and metrics["dataset"]["target_type"] == "paper"
    assert metrics["evaluation"]["test"]["method"] == "full-graph"
    ref = plain_data_parallel(args, json.loads(config.read_text()), _hetero_loss)
    curve = torch.tensor([loss for _, loss in metrics["loss_curve"]], dtype=torch.float64)
    assert len(curve) == len(ref["losses"]) > 2
    torch.testing.assert_close(curve, torch.tensor(ref["losses"], dtype=torch.float64),
                               rtol=RTOL, atol=0.0)
    final = get_fp32_state_dict_from_zero_checkpoint(
        str(tmp_path / "run" / "checkpoints"), tag=f"step{metrics['optimizer_steps']}")
    assert sorted(final) == sorted(ref["params"])
    for name, expected in ref["params"].items():
        scale = float(expected.abs().max())
        torch.testing.assert_close(final[name].float(), expected, rtol=RTOL, atol=RTOL * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert any(not torch.equal(ref["initial"][n], p) for n, p in ref["params"].items())
    # The final test accuracy: every test node counted once over the two ranks, as a
    # whole-graph forward of the reference's final weights scores it.
    from gnnzero.builder import build_dataset, build_model
    from gnnzero.config import parse_config

    cfg = parse_config(args)
    dataset = build_dataset(cfg)
    model = build_model(cfg, dataset)
    model.load_state_dict(ref["params"], strict=False)
    with torch.no_grad():
        logits = model.eval()(dataset.data.x_dict, dataset.data.edge_index_dict)["paper"]
    test = dataset.masks["test_mask"]
    expected = float((logits.argmax(1)[test] == dataset.y[test]).float().mean())
    assert metrics["evaluation"]["test"]["total"] == int(test.sum())
    assert metrics["test_accuracy"] == pytest.approx(expected, abs=1.01 / int(test.sum()))


@pytest.mark.e2e
def test_a_users_heterodata_file_trains_on_one_rank(tmp_path):
    path = _labelled_file(tmp_path)[0]
    out = tmp_path / "run"
    proc = run_deepspeed("launch/train.py", [
        "--ds_config", str(REPO / "ds_configs" / "zero0.json"), "--dataset", str(path),
        "--target-type", "paper", "--loader", "neighbor", "--num-neighbors", "5,5",
        "--batch-size", "8", "--hidden", "8", "--epochs", "3", "--output-dir", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics["dataset"]["node_types"] == {"paper": 40, "author": 12}
    assert metrics["evaluation"]["test"]["method"] == "full-graph"
    assert metrics["evaluation"]["test"]["total"] == 13
    assert "roc_auc_macro_ovr" in metrics["evaluation"]["test"]
    assert len(metrics["epochs"]) == 3


@pytest.mark.e2e
def test_bf16_zero1_with_sampled_validation(tmp_path):
    config = json.loads((REPO / "ds_configs" / "zero1.json").read_text())
    config["bf16"] = {"enabled": True}
    path = tmp_path / "bf16.json"
    path.write_text(json.dumps(config))
    proc = run_deepspeed("launch/train.py", _args(
        tmp_path, path, "--num-neighbors", "6,4", "--sampled-eval-nodes", "50", "--epochs",
        "3", "--lr", "0.01"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "per-epoch validation: sampled" in proc.stdout
    metrics = read_metrics(tmp_path / "run")
    assert metrics["precision"] == "bf16"
    entries = metrics["epochs"]
    assert all(e["sampled_val"]["total"] == 50 for e in entries)
    assert metrics["evaluation"]["val"]["method"] == "full-graph"   # the final one: exact
    assert metrics["test_accuracy"] > 0.5      # 4 balanced classes: chance is 0.25


@pytest.mark.e2e
@pytest.mark.parametrize("flags, needle", [
    (["--loader", "cluster"], "--loader cluster: a heterogeneous graph trains on --loader "
                              "neighbor"),
    (["--loader", "neighbor", "--model", "gcn"], "--model gcn: has no heterogeneous path"),
    (["--loader", "neighbor", "--task", "link"], "--task link: link prediction has no "
                                                 "heterogeneous path"),
    (["--loader", "neighbor", "--eval-method", "layerwise"], "--eval-method layerwise: has no "
                                                             "heterogeneous path"),
])
def test_settings_a_heterogeneous_graph_cannot_honour_are_refused(tmp_path, flags, needle):
    from tests.helpers import assert_one_line_error

    proc = run_train(["--ds_config", str(REPO / "ds_configs" / "zero0.json"), "--dataset",
                      "synthetic-hetero", "--output-dir", str(tmp_path / "run"), *flags])
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.e2e
def test_a_heterogeneous_run_resumes_mid_epoch_as_if_never_stopped(tmp_path):
    """Sampled fan-outs and dropout draw from the global RNG: the resumed losses, weights and
    accuracy equal an uninterrupted run's only if the loader restarts at the right batch and
    the RNG state comes back."""
    base = ["--ds_config", str(REPO / "ds_configs" / "zero2.json"), "--dataset",
            "synthetic-hetero", "--num-nodes", "300", "--loader", "neighbor",
            "--num-neighbors", "4,3", "--batch-size", "40", "--hidden", "8", "--epochs", "2",
            "--eval-every", "100", "--cache-dir", str(tmp_path / "cache")]
    full = run_train([*base, "--output-dir", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-2000:]
    steps = read_metrics(tmp_path / "full")["optimizer_steps"]
    first = run_train([*base, "--output-dir", str(tmp_path / "split"), "--max-steps",
                       str(steps // 2 + 1)])                     # stops inside epoch 1
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_train([*base, "--output-dir", str(tmp_path / "split"), "--resume"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resumed from step {steps // 2 + 1} (epoch 1, batch 1)" in second.stdout
    expected, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    torch.testing.assert_close(torch.tensor(resumed["loss_curve"]),
                               torch.tensor(expected["loss_curve"]), rtol=1e-6, atol=0.0)
    assert resumed["test_accuracy"] == expected["test_accuracy"]
    assert resumed["evaluation"]["test"]["roc_auc_macro_ovr"] == \
        expected["evaluation"]["test"]["roc_auc_macro_ovr"]
