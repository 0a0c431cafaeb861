"""``--categorical`` through ``deepspeed --num_gpus 2`` (ZeRO-3, every parameter partitioned,
the EmbeddingBag table included): every step's loss and the final parameters equal plain
PyTorch on ``[x, one_hot(x_cat) @ W]`` for the same batches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.engine.test_trainer import RTOL, _two_rank_ds_config
from tests.helpers import plain_data_parallel, read_metrics, run_deepspeed

N = 1500


def _file(tmp_path):
    from gnnzero.data.datasets import load_synthetic

    ds = load_synthetic(N, seed=4, feature_format="dense")
    rng = np.random.default_rng(0)
    x_cat = np.stack([ds.y.numpy() * 4 + rng.integers(0, 4, N), rng.integers(0, 300, N)], 1)
    path = tmp_path / "graph.pt"
    torch.save({"edge_index": ds.edge_index, "x": ds.features.rows(torch.arange(N)), "y": ds.y,
                **ds.masks, "x_cat": torch.from_numpy(x_cat)}, path)
    return path


def _one_hot_input_loss(model, batch):
    """Cross-entropy of PyG's own stack on ``[x, one_hot(x_cat) @ W]``, W the model's table."""
    from torch_geometric.nn.models.basic_gnn import BasicGNN

    from gnnzero.data.categorical import one_hot_columns

    table = model.input_encoder.embed.bag.weight
    x = torch.cat([batch.x, one_hot_columns(batch.x_cat, table.size(0)) @ table], 1)
    logits = BasicGNN.forward(model, x, batch.edge_index)
    return F.cross_entropy(logits[batch.loss_mask], batch.y[batch.loss_mask])


@pytest.mark.e2e
def test_categorical_columns_train_through_zero3_on_two_ranks(tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    config = _two_rank_ds_config(3, tmp_path)
    out = tmp_path / "run"
    args = ["--ds_config", str(config), "--dataset", str(_file(tmp_path)), "--categorical",
            "--categorical-dim", "6", "--model", "gcn", "--hidden", "16", "--dropout", "0",
            "--loader", "cluster", "--num-parts", "8", "--clusters-per-batch", "2",
            "--epochs", "2", "--eval-every", "100", "--output-dir", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    proc = run_deepspeed("launch/train.py", args, num_procs=2, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 3
    assert {r["batch_x_layout"] for r in metrics["memory"]["per_rank"]} == {"dense"}
    ref = plain_data_parallel(args, json.loads(config.read_text()), _one_hot_input_loss)
    curve = torch.tensor([loss for _, loss in metrics["loss_curve"]], dtype=torch.float64)
    torch.testing.assert_close(curve, torch.tensor(ref["losses"], dtype=torch.float64),
                               rtol=RTOL, atol=0.0)
    steps = metrics["optimizer_steps"]
    final = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints"), tag=f"step{steps}")
    assert "input_encoder.embed.bag.weight" in final and sorted(final) == sorted(ref["params"])
    for name, expected in ref["params"].items():
        scale = float(expected.abs().max())
        torch.testing.assert_close(final[name].float(), expected, rtol=RTOL, atol=RTOL * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")
