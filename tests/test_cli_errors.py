"""Bad input to launch/train.py: one line naming the problem and the fix, exit code 2, no traceback."""
from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

from conftest import REPO, run_train

_spec = importlib.util.spec_from_file_location("train_entry", REPO / "launch" / "train.py")
train_entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_entry)


@pytest.fixture
def run_main(capsys, monkeypatch):
    """Call launch/train.py's main() in-process (same error handling, no interpreter start-up)."""
    monkeypatch.chdir(REPO)

    def call(args: list[str]):
        with pytest.raises(SystemExit) as exc:
            train_entry.main(args)
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=exc.value.code, stdout=captured.out, stderr=captured.err)
    return call


def _assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_ds_config(run_main, tmp_path):
    proc = run_main(["--ds_config", str(tmp_path / "nope.json")])
    _assert_one_line_error(proc, "nope.json", "does not exist", "ds_configs")


def test_malformed_ds_config(run_main, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2},,}')
    proc = run_main(["--ds_config", str(bad)])
    _assert_one_line_error(proc, "not valid JSON", "line 1")


def test_misspelt_deepspeed_key(run_main, tmp_path):
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({"zero_optimisation": {"stage": 2}, "train_micro_batch_size_per_gpu": 1}))
    proc = run_main(["--ds_config", str(bad)])
    _assert_one_line_error(proc, "zero_optimisation", "did you mean 'zero_optimization'")


def test_bad_zero_stage_value(run_main, tmp_path):
    bad = tmp_path / "stage.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 5}}))
    proc = run_main(["--ds_config", str(bad)])
    _assert_one_line_error(proc, "stage must be 0, 1, 2 or 3")


def test_fp16_refused_on_cpu_before_deepspeed_starts():
    proc = run_train(["--ds_config", "ds_configs/zero2_fp16.json"])
    _assert_one_line_error(proc, "fp16 needs a CUDA GPU", "bf16")
    assert "deepspeed.ops" not in proc.stdout + proc.stderr  # refused before DeepSpeed starts


@pytest.mark.parametrize("flag,value,needle", [
    ("--model", "transformer", "invalid choice: 'transformer'"),
    ("--loader", "random", "invalid choice: 'random'"),
])
def test_unknown_choice(run_main, flag, value, needle):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", flag, value])
    _assert_one_line_error(proc, needle)


@pytest.mark.parametrize("extra,needle", [
    (["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["--pca-components", "-2"], "--pca-components must be >= 0 (0 = off), got -2"),
    (["--patience", "-1"], "--patience must be 0 (off) or >= --eval-every (1), got -1"),
    (["--eval-every", "5", "--patience", "3"], "--patience must be 0 (off) or >= --eval-every (5)"),
])
def test_bad_validation_schedule(run_main, extra, needle):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", *extra])
    _assert_one_line_error(proc, needle)


def test_unknown_dataset(run_main):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", "--dataset", "imagenet"])
    _assert_one_line_error(proc, "unknown --dataset 'imagenet'", "synthetic")


def test_data_root_without_files(run_main, tmp_path):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", "--dataset", "cora",
                      "--data-root", str(tmp_path)])
    _assert_one_line_error(proc, "has no Cora raw files", "--data-root")


def test_planetoid_without_data_root(run_main):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", "--dataset", "cora"])
    _assert_one_line_error(proc, "needs --data-root")


def test_deepspeed_rejects_config_value(tmp_path):
    bad = tmp_path / "reject.json"
    bad.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1,
                               "zero_optimization": {"stage": 2, "reduce_bucket_size": "lots"}}))
    proc = run_train(["--ds_config", str(bad), "--num-nodes", "200", "--epochs", "1",
                      "--no-checkpoint"])
    _assert_one_line_error(proc, "DeepSpeed rejected the config", "reduce_bucket_size")
