"""The engine through ``launch/train.py``: --max-steps / --resume reproduce an uninterrupted
run, a NaN loss stops the run naming the step and the last good checkpoint, fp16 on CPU is
refused before DeepSpeed starts."""
from __future__ import annotations

import shutil

import pytest
import torch

from conftest import read_metrics, run_train

pytestmark = pytest.mark.e2e

# 1,200 nodes, GraphSAINT node sampler, 3 optimizer steps an epoch.  The sampler and dropout
# both draw from the global RNG, so the resumed loss curve matches only if every rank's RNG
# state is restored exactly.
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


def test_fp16_on_cpu_is_refused_before_deepspeed_starts(tmp_path):
    """(The shipped zero*_fp16.json files are refused the same way: test_engine_units.py.)"""
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on a GPU")
    proc = _train(tmp_path, "fp16", "--precision", "fp16")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: fp16 needs a CUDA GPU and this run is on CPU; use bf16")
    assert "Initializing TorchBackend" not in proc.stdout + proc.stderr  # no process group
    assert not (tmp_path / "fp16").exists()


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


def test_pca_components_train_a_model_on_the_projected_features(tmp_path):
    from gnnzero.models import build_model, count_parameters

    proc = _train(tmp_path, "pca", "--pca-components", "16", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(tmp_path / "pca")
    assert metrics["dataset"]["num_features"] == 16
    assert metrics["dataset"]["feature_store"] == "DenseFeatureStore"
    expected = build_model("sage", 16, 16, metrics["dataset"]["num_classes"], 2)
    assert metrics["num_parameters"] == count_parameters(expected)
