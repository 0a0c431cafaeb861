"""End-to-end: the real `deepspeed` launcher with 1 and 2 CPU ranks (gloo) on the synthetic graph."""
from __future__ import annotations

import json

import pytest

from conftest import read_metrics, run_deepspeed

CHANCE = 1 / 8  # the synthetic graph has 8 balanced classes


def _check_metrics(metrics: dict, world_size: int, stage: int, precision: str) -> None:
    assert metrics["world_size"] == world_size
    assert metrics["zero_stage"] == stage
    assert metrics["precision"] == precision
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] > CHANCE + 0.5, metrics["test_accuracy"]
    memory = metrics["memory"]
    assert memory["kind"] == "process_peak_rss"  # CPU run: labelled as RSS, not CUDA
    assert [r["rank"] for r in memory["per_rank"]] == list(range(world_size))
    assert all(r["peak_bytes"] > 10 * 2**20 for r in memory["per_rank"])
    throughput = metrics["throughput"]
    assert throughput["train_nodes_per_s"] > 0 and throughput["batches_per_s"] > 0
    assert metrics["epoch_time_s"] > 0
    assert metrics["config"]["model"]["arch"] == "sage"
    assert metrics["ds_config"]["zero_optimization"]["stage"] == stage
    # Loss went down over training.
    losses = [e["loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]


@pytest.mark.e2e
def test_deepspeed_one_rank_zero2(tmp_path):
    out = tmp_path / "run"
    proc = run_deepspeed("launch/train.py", [
        "--ds_config", "ds_configs/zero2.json", "--num-nodes", "3000", "--epochs", "8",
        "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-checkpoint"],
        num_procs=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    _check_metrics(metrics, world_size=1, stage=2, precision="fp32")
    used = json.loads((out / "ds_config_used.json").read_text())
    assert used["zero_optimization"]["stage"] == 2
    assert "summary" in proc.stdout and "test accuracy" in proc.stdout


@pytest.mark.e2e
def test_deepspeed_two_ranks_zero3_bf16_agree(tmp_path):
    out = tmp_path / "run"
    proc = run_deepspeed("launch/train.py", [
        "--ds_config", "ds_configs/zero3_bf16.json", "--num-nodes", "3000", "--epochs", "8",
        "--num-parts", "16", "--clusters-per-batch", "2",
        "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-checkpoint"],
        num_procs=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    _check_metrics(metrics, world_size=2, stage=3, precision="bf16")
    # 16 clusters, 2 per batch, 2 ranks: 4 steps each, every cluster once per epoch.
    assert metrics["loader"]["steps_per_epoch"] == 4
    first, second = (r["param_fingerprint"] for r in metrics["memory"]["per_rank"])
    assert first == second  # both ranks hold the same final parameters


@pytest.mark.e2e
def test_two_ranks_stop_early_at_the_same_epoch(tmp_path):
    # lr 0 keeps validation accuracy flat, so --patience 2 must end the run after epoch 2
    # on both ranks; a rank that trained on would hang its peer's next collective.
    out = tmp_path / "run"
    proc = run_deepspeed("launch/train.py", [
        "--ds_config", "ds_configs/zero2.json", "--num-nodes", "1500", "--epochs", "20",
        "--num-parts", "8", "--clusters-per-batch", "2", "--lr", "0", "--patience", "2",
        "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")],
        num_procs=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics["world_size"] == 2 and metrics["early_stopped_epoch"] == 2
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert metrics["optimizer_steps"] == 3 * metrics["loader"]["steps_per_epoch"]
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step{metrics['optimizer_steps']}"
