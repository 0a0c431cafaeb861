"""One run's set-up, loop and finish (gnnzero/run.py): checks before any data is loaded,
resume safety, and the plain-PyG baseline running the trainer's own loop."""
from __future__ import annotations

import pytest

from gnnzero.config import parse_config
from gnnzero.errors import GnnZeroError
from tests.helpers import assert_one_line_error, read_metrics, run_train

SMALL = ["--ds_config", "ds_configs/zero2.json", "--num-nodes", "600", "--hidden", "16",
         "--loader", "full", "--epochs", "2"]


def test_unwritable_output_dir_is_refused_before_any_data_is_loaded(tmp_path, monkeypatch):
    import gnnzero.run as run_module

    def no_loading(cfg):
        raise AssertionError("the dataset was loaded before the output directory was checked")

    monkeypatch.setattr(run_module, "build_dataset", no_loading)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = parse_config(SMALL + ["--output-dir", str(blocker / "run")])
    with pytest.raises(GnnZeroError, match=r"--output-dir .*a-file/run is not writable"):
        run_module.setup(cfg)


@pytest.mark.e2e
def test_resume_needs_a_checkpoint_unless_auto(tmp_path):
    out = tmp_path / "run"
    proc = run_train(SMALL + ["--output-dir", str(out), "--resume"])
    assert_one_line_error(proc, "--resume:", "holds no complete checkpoint", "--resume auto")
    assert not (out / "metrics.json").exists()
    proc = run_train(SMALL + ["--output-dir", str(out), "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--resume auto: no checkpoint" in proc.stdout
    assert read_metrics(out)["optimizer_steps"] == 2


@pytest.mark.e2e
@pytest.mark.parametrize("changed, field", [
    (["--seed", "1"], "seed 0 in checkpoint vs 1 in this run"),
    (["--precision", "bf16"], "precision 'fp32' in checkpoint vs 'bf16'"),
    (["--grad-accum", "2"], "gradient_accumulation_steps 1 in checkpoint vs 2"),
    (["--num-nodes", "700"], "dataset.synthetic.num_nodes 600 in checkpoint vs 700"),
    (["--task", "link"], "task.task 'node' in checkpoint vs 'link'"),
])
def test_resume_with_a_changed_setting_names_the_field(tmp_path, changed, field):
    out = tmp_path / "run"
    assert run_train(SMALL + ["--output-dir", str(out)]).returncode == 0
    proc = run_train(SMALL + ["--output-dir", str(out), "--resume", "--epochs", "3", *changed])
    assert_one_line_error(proc, "does not match this run", field)


@pytest.mark.e2e
@pytest.mark.parametrize("world", [1, 2])
def test_baseline_runs_the_same_loop_as_deepspeed_zero0(tmp_path, world):
    """Plain PyTorch (benchmarks/baseline.py: no prefetching; DDP on 2 ranks) and DeepSpeed
    ZeRO-0 fp32 (batches prefetched in a background thread) on the same batches, with
    gradient accumulation, clipping and dropout: the same loss curve and accuracy."""
    from tests.helpers import run_deepspeed

    flags = ["--ds_config", "ds_configs/zero0.json", "--num-nodes", "800", "--hidden", "16",
             "--loader", "cluster", "--num-parts", "8", "--clusters-per-batch", "2",
             "--grad-accum", "2", "--grad-clip", "0.05", "--epochs", "2", "--no-checkpoint"]
    plain, ds = tmp_path / "plain", tmp_path / "ds"
    common = ["--cache-dir", str(tmp_path / "cache")]
    for script, out in (("benchmarks/baseline.py", plain), ("launch/train.py", ds)):
        proc = run_deepspeed(script, flags + common + ["--output-dir", str(out)],
                             num_procs=world, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = read_metrics(plain), read_metrics(ds)
    assert a["engine"] == "plain-pyg" and b["engine"] == "deepspeed"
    assert a["world_size"] == b["world_size"] == world
    assert a["optimizer_steps"] == b["optimizer_steps"] == 4 // world
    for (step_a, loss_a), (step_b, loss_b) in zip(a["loss_curve"], b["loss_curve"], strict=True):
        assert step_a == step_b
        assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-9)


def test_a_last_epoch_validated_like_the_final_evaluation_is_not_evaluated_twice(tmp_path,
                                                                                monkeypatch):
    """Per-epoch validation layer-wise, as the final evaluation: 2 epochs cost 2 layer-wise
    passes (epoch 0 and the final one), not 3; the last epoch's figures are the final ones."""
    import gnnzero.engine.evaluation as evaluation
    from gnnzero.run import run

    calls = []
    real = evaluation.evaluate_layerwise

    def counted(*args, **kwargs):
        calls.append(kwargs.get("roc_auc", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_layerwise", counted)
    metrics = run(parse_config(SMALL + ["--eval-method", "layerwise", "--eval-every", "1",
                                        "--output-dir", str(tmp_path / "run")]), plain=True)
    assert calls == [False, True]          # epoch 0's validation, then the final evaluation
    last = metrics["epochs"][-1]
    assert last["val_accuracy"] == metrics["val_accuracy"]
    assert last["test_accuracy"] == metrics["test_accuracy"]
    assert "validated_by_final_evaluation" not in last
    assert "val_accuracy" in metrics["epochs"][0]
