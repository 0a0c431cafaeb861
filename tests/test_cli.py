"""Bad input to launch/train.py: one line naming the problem and the fix, exit code 2, no traceback.

Flag checks made by the parser itself are in test_config.py."""
from __future__ import annotations

import json

import pytest

from tests.helpers import assert_one_line_error, run_train


def test_missing_ds_config(run_main, tmp_path):
    proc = run_main(["--ds_config", str(tmp_path / "nope.json")])
    assert_one_line_error(proc, "nope.json", "does not exist", "ds_configs")


def test_malformed_ds_config(run_main, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2},,}')
    proc = run_main(["--ds_config", str(bad)])
    assert_one_line_error(proc, "not valid JSON", "line 1")


def test_misspelt_deepspeed_key(run_main, tmp_path):
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({"zero_optimisation": {"stage": 2}, "train_micro_batch_size_per_gpu": 1}))
    proc = run_main(["--ds_config", str(bad)])
    assert_one_line_error(proc, "zero_optimisation", "did you mean 'zero_optimization'")


def test_bad_zero_stage_value(run_main, tmp_path):
    bad = tmp_path / "stage.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 5}}))
    proc = run_main(["--ds_config", str(bad)])
    assert_one_line_error(proc, "stage must be 0, 1, 2 or 3")


@pytest.mark.e2e
def test_fp16_refused_on_cpu_before_deepspeed_starts():
    proc = run_train(["--ds_config", "ds_configs/zero2_fp16.json"])
    assert_one_line_error(proc, "fp16 needs a CUDA GPU", "bf16")
    assert "deepspeed.ops" not in proc.stdout + proc.stderr  # refused before DeepSpeed starts


def test_unknown_dataset(run_main):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", "--dataset", "imagenet"])
    assert_one_line_error(proc, "unknown --dataset 'imagenet'", "synthetic")


def test_data_root_without_files(run_main, tmp_path):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", "--dataset", "cora",
                      "--data-root", str(tmp_path)])
    assert_one_line_error(proc, "has no Cora raw files", "--data-root")


def test_planetoid_without_data_root(run_main):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", "--dataset", "cora"])
    assert_one_line_error(proc, "needs --data-root")


@pytest.mark.e2e
def test_deepspeed_rejects_config_value(tmp_path):
    bad = tmp_path / "reject.json"
    # A nested key only DeepSpeed checks (gnnzero's schema checks the shapes it knows).
    bad.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1,
                               "bf16": {"enabled": False, "enabeld": True}}))
    proc = run_train(["--ds_config", str(bad), "--num-nodes", "200", "--epochs", "1",
                      "--no-checkpoint"])
    assert_one_line_error(proc, "DeepSpeed rejected the config", "enabeld")
