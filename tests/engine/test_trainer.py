"""The trainer: the early-stopping count on its own, and whole runs through launch/train.py.

One process (``python launch/train.py``): --max-steps / --resume reproduce an uninterrupted run,
a NaN loss stops the run naming the step and the last good checkpoint, fp16 on CPU is refused
before DeepSpeed starts, early stopping, PCA features.  The real ``deepspeed`` launcher with 1 and
2 CPU ranks (gloo) on the synthetic graph; on 2 ranks (ZeRO-2 and ZeRO-3) the loop's losses and
final parameters are those of a plain PyTorch loop on the same batches."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import REPO, plain_data_parallel, read_metrics, run_deepspeed, run_train


# 1,200 nodes, GraphSAINT node sampler, 3 optimizer steps an epoch.  Dropout draws from the
# global RNG, so the resumed loss curve matches only if every rank's RNG state is restored
# exactly; the sampler draws each step from its own generator, so the resumed steps' batches are
# the uninterrupted run's.
SMALL = ["--ds_config", "ds_configs/zero2.json", "--num-nodes", "1200", "--hidden", "16",
         "--loader", "saint-node", "--batch-size", "300", "--saint-steps", "3",
         "--dropout", "0.5", "--epochs", "2", "--eval-every", "100"]


def _train(tmp_path, out: str, *extra: str):
    args = SMALL + ["--output-dir", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"),
                    *extra]
    return run_train(args, timeout=240)


def _final_weights(run_dir) -> dict[str, torch.Tensor]:
    from gnnzero.engine.checkpoint import export_fp32_state_dict

    return export_fp32_state_dict(str(run_dir / "checkpoints"))


@pytest.mark.e2e
def test_max_steps_then_resume_matches_an_uninterrupted_run(tmp_path):
    full = _train(tmp_path, "full")
    assert full.returncode == 0, full.stderr[-2000:]
    first = _train(tmp_path, "split", "--max-steps", "4")  # stops inside epoch 1
    assert first.returncode == 0, first.stderr[-2000:]
    assert read_metrics(tmp_path / "split")["optimizer_steps"] == 4
    # A later save killed half-way: its folder exists without meta, and 'latest' names it.
    ckpts = tmp_path / "split" / "checkpoints"
    shutil.copytree(ckpts / "step4", ckpts / "step6")
    (ckpts / "step6" / "gnnzero_meta.json").unlink()
    (ckpts / "latest").write_text("step6")
    second = _train(tmp_path, "split", "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from step 4 (epoch 1, batch 1)" in second.stdout
    expected, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert resumed["optimizer_steps"] == expected["optimizer_steps"] == 6
    steps = [s for s, _ in resumed["loss_curve"]]
    assert steps == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(torch.tensor(resumed["loss_curve"]),
                               torch.tensor(expected["loss_curve"]), rtol=1e-6, atol=0.0)
    weights, reference = _final_weights(tmp_path / "split"), _final_weights(tmp_path / "full")
    assert weights.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert resumed["test_accuracy"] == expected["test_accuracy"]


@pytest.mark.e2e
def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path):
    # lr 1e30: the first AdamW step moves every weight by ~1e30, so the second forward
    # overflows to inf/NaN.
    proc = _train(tmp_path, "nan", "--lr", "1e30", "--checkpoint-every", "1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    # (tqdm's bar may precede the message on the same terminal line)
    message = [line[line.index("error:"):] for line in proc.stderr.splitlines() if "error:" in line]
    assert len(message) == 1, proc.stderr[-2000:]
    assert "at optimizer step 2 (epoch 0)" in message[0]
    assert f"last good checkpoint: {tmp_path / 'nan' / 'checkpoints' / 'step1'}" in message[0]
    # ... and that checkpoint is intact: the NaN never reached it.
    weights = _final_weights(tmp_path / "nan")
    assert all(torch.isfinite(v).all() for v in weights.values())


@pytest.mark.e2e
def test_fp16_on_cpu_is_refused_before_deepspeed_starts(tmp_path):
    """(The shipped zero*_fp16.json files are refused the same way: tests/engine/test_ds_config.py.)"""
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on a GPU")
    proc = _train(tmp_path, "fp16", "--precision", "fp16")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: fp16 needs a CUDA GPU and this run is on CPU; use bf16")
    assert "Initializing TorchBackend" not in proc.stdout + proc.stderr  # no process group
    assert not (tmp_path / "fp16").exists()


@pytest.mark.e2e
def test_patience_stops_when_validation_accuracy_stays_flat(tmp_path):
    # lr 0: the weights never change, so validation accuracy is flat from epoch 0 and the
    # run must end exactly `patience` epochs after it, with a checkpoint of that epoch.
    proc = _train(tmp_path, "flat", "--lr", "0", "--epochs", "30", "--eval-every", "1",
                  "--patience", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(tmp_path / "flat")
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2, 3]
    assert metrics["early_stopped_epoch"] == 3
    assert metrics["best_val"]["epoch"] == 0
    assert "early stop after epoch 3: no better validation accuracy for 3 epochs" in proc.stdout
    assert metrics["optimizer_steps"] == 4 * 3


@pytest.mark.e2e
def test_pca_components_train_a_model_on_the_projected_features(tmp_path):
    from gnnzero.models import build_model, count_parameters

    proc = _train(tmp_path, "pca", "--pca-components", "16", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(tmp_path / "pca")
    assert metrics["dataset"]["num_features"] == 16
    assert metrics["dataset"]["feature_store"] == "DenseFeatureStore"
    expected = build_model("sage", 16, 16, metrics["dataset"]["num_classes"], 2)
    assert metrics["num_parameters"] == count_parameters(expected)


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
    # the synthetic graph's bag-of-words store is sparse, and so are its batches (as stored)
    rank = metrics["memory"]["per_rank"][0]
    assert rank["batch_x_layout"] == "sparse"
    assert re.search(r"training batches: x layout / peak bytes\s+r0: sparse /", proc.stdout)
    dense_x = 3000 * metrics["dataset"]["num_features"] * 4
    assert rank["batch_bytes_peak"] < dense_x / 5


# 1,500 nodes in 16 METIS parts, 2 parts a batch, 2 ranks: 4 optimizer steps an epoch, 8 in all.
TWO_RANKS = ["--num-nodes", "1500", "--hidden", "16", "--layers", "2", "--dropout", "0",
             "--loader", "cluster", "--num-parts", "16", "--clusters-per-batch", "2",
             "--epochs", "2", "--eval-every", "100", "--seed", "7"]
RTOL = 1e-5


def _two_rank_ds_config(stage: int, tmp_path, persistent: bool = False) -> Path:
    """The shipped zero<stage>.json with a clipping threshold these steps' gradient norms
    (0.37-0.67) cross, so the global norm over both ranks' partitions matters; for ZeRO-3,
    every parameter partitioned (its persistence threshold would keep this small model's
    parameters whole on every rank) unless ``persistent``, which keeps the shipped threshold
    (every parameter whole: gnnzero/engine/zero3_hooks.py replaces the module hooks); Adam's
    eps 1e-6 instead of 1e-8, since an update
    ``lr g / (|g| + eps)`` turns fp32 rounding of a gradient that nearly cancels to ~eps
    into ``lr * rounding / eps`` (one weight of 8,000 moved 1e-5 apart at eps 1e-8)."""
    config = json.loads((REPO / "ds_configs" / f"zero{stage}.json").read_text())
    config["gradient_clipping"] = 0.45
    config["optimizer"]["params"]["eps"] = 1e-6
    if stage == 3 and not persistent:
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / f"zero{stage}_two_ranks.json"
    path.write_text(json.dumps(config))
    return path


def _node_loss(model, batch):
    """Cross-entropy over the batch's loss nodes from the densified sparse features."""
    assert batch.loss_mask.any() and getattr(batch, "edge_weight", None) is None
    assert batch.x.layout == torch.sparse_csr   # the run's batches were sparse
    logits = model(batch.x.to_dense().float(), batch.edge_index)
    return F.cross_entropy(logits[batch.loss_mask], batch.y[batch.loss_mask])


@pytest.mark.e2e
@pytest.mark.parametrize("stage, persistent", [(2, False), (3, False), (3, True)],
                         ids=["zero2", "zero3", "zero3-persistent"])
def test_two_rank_training_loop_matches_plain_pytorch(tmp_path, stage, persistent):
    """``deepspeed --num_gpus 2 launch/train.py`` (fp32, Cluster-GCN, dropout 0, 2 epochs)
    against a plain PyTorch loop on both ranks' batches: every step's loss and the final
    parameters, read with DeepSpeed's ``zero_to_fp32`` from the checkpoint, within 1e-5."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    config = _two_rank_ds_config(stage, tmp_path, persistent)
    out = tmp_path / "run"
    args = ["--ds_config", str(config), *TWO_RANKS, "--output-dir", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    proc = run_deepspeed("launch/train.py", args, num_procs=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert (metrics["world_size"], metrics["zero_stage"], metrics["precision"]) == \
        (2, stage, "fp32")
    assert metrics["loader"]["steps_per_epoch"] == 4
    assert {r["batch_x_layout"] for r in metrics["memory"]["per_rank"]} == {"sparse"}

    ds_config = json.loads(config.read_text())
    ref = plain_data_parallel(args, ds_config, _node_loss)
    steps = len(ref["losses"])
    assert steps == 8 and metrics["optimizer_steps"] == steps
    assert [s for s, _ in metrics["loss_curve"]] == list(range(1, steps + 1))
    curve = torch.tensor([loss for _, loss in metrics["loss_curve"]], dtype=torch.float64)
    torch.testing.assert_close(curve, torch.tensor(ref["losses"], dtype=torch.float64),
                               rtol=RTOL, atol=0.0)

    checkpoints = out / "checkpoints"
    tag = f"step{steps}"
    assert (checkpoints / "latest").read_text().strip() == tag
    final = get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag)
    assert sorted(final) == sorted(ref["params"])
    for name, expected in ref["params"].items():
        moved = float((expected - ref["initial"][name]).abs().max())
        assert moved > 1e-3, f"{name} barely trained: the comparison would prove little"
        scale = float(expected.abs().max())
        torch.testing.assert_close(final[name].float(), expected, rtol=RTOL, atol=RTOL * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # Clipping bit on some steps, not all: the global norm over both ranks' partitions counted.
    clip = ds_config["gradient_clipping"]
    assert min(ref["grad_norms"]) < clip < max(ref["grad_norms"]), ref["grad_norms"]


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


def test_epochs_without_improvement_counts_from_the_earliest_best_validation():
    from gnnzero.engine.selection import epochs_without_improvement

    assert epochs_without_improvement([{"epoch": 0, "loss": 1.0}]) is None
    log = [{"epoch": 4, "val_accuracy": 0.5}, {"epoch": 9, "val_accuracy": 0.7},
           {"epoch": 14, "val_accuracy": 0.6}, {"epoch": 19, "loss": 0.3},
           {"epoch": 24, "val_accuracy": 0.7}]
    assert epochs_without_improvement(log) == 15  # ties keep the earlier best (epoch 9)
    log.append({"epoch": 29, "val_accuracy": 0.71})
    assert epochs_without_improvement(log) == 0
