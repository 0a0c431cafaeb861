"""``torchrun --nproc_per_node 2 launch/train.py`` and ``deepspeed --num_gpus 2 launch/train.py``
on the same flags (2 CPU ranks, gloo, ZeRO-2): the same world, the same loss at every step and
the same final parameters, read from each run's checkpoint with DeepSpeed's zero_to_fp32."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import read_metrics, run_deepspeed, run_torchrun

FLAGS = ["--ds_config", "ds_configs/zero2.json", "--num-nodes", "1500", "--hidden", "16",
         "--dropout", "0.5", "--loader", "cluster", "--num-parts", "16",
         "--clusters-per-batch", "2", "--epochs", "2", "--eval-every", "100", "--seed", "5"]


@pytest.mark.e2e
def test_torchrun_and_the_deepspeed_launcher_agree(tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    runs = {}
    for name, launch in (("torchrun", run_torchrun), ("deepspeed", run_deepspeed)):
        out = tmp_path / name
        proc = launch("launch/train.py", [*FLAGS, "--output-dir", str(out),
                                          "--cache-dir", str(tmp_path / "cache")],
                      num_procs=2, timeout=400)
        assert proc.returncode == 0, name + proc.stdout[-2000:] + proc.stderr[-2000:]
        metrics = read_metrics(out)
        assert metrics["world_size"] == 2 and metrics["zero_stage"] == 2
        steps = metrics["optimizer_steps"]
        runs[name] = (metrics, get_fp32_state_dict_from_zero_checkpoint(
            str(out / "checkpoints"), tag=f"step{steps}"))
    (tr_metrics, tr_params), (ds_metrics, ds_params) = runs["torchrun"], runs["deepspeed"]
    assert tr_metrics["loss_curve"] == ds_metrics["loss_curve"]
    assert sorted(tr_params) == sorted(ds_params)
    for name, value in ds_params.items():
        torch.testing.assert_close(tr_params[name], value, rtol=0, atol=0, msg=name)
    assert tr_metrics["test_accuracy"] == ds_metrics["test_accuracy"]
