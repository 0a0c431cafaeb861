"""Link prediction through launch/train.py and the real DeepSpeed engine.

Two CPU ranks (ZeRO-2 with the dot decoder, ZeRO-3 with the MLP decoder and a low-rank,
weight-shared encoder): every step's loss and the final parameters equal a plain PyTorch
loop (binary cross-entropy on each rank's pairs, gradients averaged, AdamW).  One rank:
ZeRO-0 full batch, ZeRO-1 bf16 with LinkNeighborLoader and sampled validation; each
writes the link metrics (AUC, AP, Hits@K, MRR, the distance table) and a summary."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.engine.test_trainer import RTOL, _two_rank_ds_config
from tests.helpers import REPO, plain_data_parallel, read_metrics, run_deepspeed

# 1,500 nodes in 16 METIS parts, 2 parts a batch, 2 ranks: 4 optimizer steps an epoch.
TWO_RANKS = ["--task", "link", "--num-nodes", "1500", "--hidden", "16", "--dropout", "0",
             "--loader", "cluster", "--num-parts", "16", "--clusters-per-batch", "2",
             "--epochs", "2", "--eval-every", "100", "--seed", "3"]
ENCODERS = {2: ["--model", "gcn", "--layers", "2"],
            3: ["--model", "sage", "--layers", "4", "--rank", "4", "--share-weights",
                "--decoder", "mlp"]}


def _link_loss(model, batch):
    """Binary cross-entropy of the batch's pairs, scored by hand from the encoder output."""
    z = model.encoder(batch.x.to_dense().float(), batch.edge_index)
    src, dst = batch.edge_label_index
    if hasattr(model.decoder, "lins"):
        scores = model.decoder.lins(z[src] * z[dst]).squeeze(-1)
    else:
        scores = (z[src] * z[dst]).sum(-1)
    return F.binary_cross_entropy_with_logits(scores, batch.edge_label)


def _check_link_metrics(metrics: dict) -> None:
    assert metrics["task"] == "link" and metrics["headline"]["metric"] == "auc"
    final = metrics["evaluation"]
    for split in ("val", "test"):
        figures = final[split]
        assert 0.0 <= figures["auc"] <= 1.0 and 0.0 <= figures["mrr"] <= 1.0
        assert {"average_precision", "hits@20", "hits@50", "hits@100"} <= set(figures)
    assert final["buckets"] and sum(b["positives"] for b in final["buckets"]) == \
        final["test"]["positives"]
    assert final["split"]["test_edges"] == final["test"]["positives"]
    assert metrics["throughput"]["train_pairs_per_s"] > 0


@pytest.mark.e2e
@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_link_training_matches_plain_pytorch(tmp_path, stage):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    config = _two_rank_ds_config(stage, tmp_path)
    out = tmp_path / "run"
    args = ["--ds_config", str(config), *TWO_RANKS, *ENCODERS[stage], "--output-dir", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    proc = run_deepspeed("launch/train.py", args, num_procs=2, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert (metrics["world_size"], metrics["zero_stage"]) == (2, stage)
    _check_link_metrics(metrics)
    assert "test edges by hop distance" in proc.stdout

    ref = plain_data_parallel(args, json.loads(config.read_text()), _link_loss)
    steps = len(ref["losses"])
    assert steps == metrics["optimizer_steps"] == 2 * metrics["loader"]["steps_per_epoch"]
    curve = torch.tensor([loss for _, loss in metrics["loss_curve"]], dtype=torch.float64)
    torch.testing.assert_close(curve, torch.tensor(ref["losses"], dtype=torch.float64),
                               rtol=RTOL, atol=0.0)
    final = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints"), tag=f"step{steps}")
    assert sorted(final) == sorted(ref["params"])
    assert any(name.startswith("decoder.") for name in final) == (stage == 3)
    for name, expected in ref["params"].items():
        assert float((expected - ref["initial"][name]).abs().max()) > 1e-4, name
        scale = float(expected.abs().max())
        torch.testing.assert_close(final[name].float(), expected, rtol=RTOL, atol=RTOL * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.e2e
@pytest.mark.parametrize("config, extra", [
    ("zero0.json", ["--loader", "full", "--epochs", "30", "--eval-every", "10"]),
    ("zero1_bf16.json", ["--loader", "neighbor", "--batch-size", "512", "--epochs", "3",
                         "--sampled-eval-nodes", "150", "--decoder", "mlp"]),
])
def test_one_rank_link_runs(tmp_path, config, extra):
    out = tmp_path / "run"
    if "neighbor" in extra:
        pytest.importorskip("torch_sparse")
    proc = run_deepspeed("launch/train.py", [
        "--ds_config", f"ds_configs/{config}", "--task", "link", "--num-nodes", "1200",
        "--hidden", "32", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
        *extra], num_procs=1, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    _check_link_metrics(metrics)
    assert metrics["precision"] == ("bf16" if "bf16" in config else "fp32")
    losses = [e["loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]
    if "--sampled-eval-nodes" in extra:
        sampled = metrics["epochs"][-1]["sampled_val"]
        assert sampled["total"] == 300 and sampled["ci_low"] <= sampled["auc"] <= sampled["ci_high"]
    else:
        assert metrics["test_auc"] > 0.7, metrics["test_auc"]
        _check_inspection(out)


def _check_inspection(run_dir) -> None:
    """``python -m gnnzero.inspect RUN_DIR`` on a link run draws the distance bars and the
    score histograms; the node-class pictures are refused in one line."""
    inspect = [sys.executable, "-m", "gnnzero.inspect", str(run_dir)]
    proc = subprocess.run(inspect, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("link_buckets.png", "link_scores.png"):
        picture = run_dir / "inspect" / name
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    proc = subprocess.run([*inspect, "--embeddings"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "is a --task link run: use --links or --curves" in proc.stderr
