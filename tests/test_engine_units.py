"""Engine pieces without a DeepSpeed launch: config merging, batch casting, the loss,
bf16 aggregation on a star graph, activation checkpointing, checkpoint tag selection."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data, HeteroData

from conftest import REPO
from gnnzero.engine import checkpoint as ckpt
from gnnzero.engine.batches import node_loss, prepare_batch
from gnnzero.engine.ds_config import (EngineOverrides, apply_overrides, finalize_for_device,
                                      load_ds_config, offload_of, precision_of, zero_stage_of)
from gnnzero.errors import GnnZeroError

CONFIGS = sorted((REPO / "ds_configs").glob("*.json"))


# --- ds_config ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_ds_config(str(path))
    if precision_of(config) == "fp16":
        with pytest.raises(GnnZeroError, match="fp16 needs a CUDA GPU"):
            finalize_for_device(config, "cpu")
        finalize_for_device(config, "cuda")
    else:
        finalize_for_device(config, "cpu")


def test_overrides_merge_without_touching_the_file_config():
    base = load_ds_config(str(REPO / "ds_configs" / "zero2.json"))
    before = json.dumps(base, sort_keys=True)
    merged = apply_overrides(base, EngineOverrides(zero_stage=3, precision="bf16", grad_accum=4,
                                                   grad_clip=0.5, offload="optimizer", lr=0.1))
    assert json.dumps(base, sort_keys=True) == before
    assert zero_stage_of(merged) == 3 and precision_of(merged) == "bf16"
    assert merged["gradient_accumulation_steps"] == 4 and merged["gradient_clipping"] == 0.5
    assert offload_of(merged) == "optimizer" and merged["optimizer"]["params"]["lr"] == 0.1
    assert "train_batch_size" not in merged
    fp16 = apply_overrides(base, EngineOverrides(precision="fp16"))
    assert fp16["fp16"] == {"enabled": True, "loss_scale": 0} and not fp16["bf16"]["enabled"]


def test_device_rules():
    base = load_ds_config(str(REPO / "ds_configs" / "zero2.json"))
    cpu = finalize_for_device(apply_overrides(base, EngineOverrides()), "cpu")
    assert cpu["optimizer"]["params"]["torch_adam"] is True  # FusedAdam is CUDA-only
    offload = finalize_for_device(apply_overrides(base, EngineOverrides(offload="optimizer")), "cpu")
    assert "torch_adam" not in offload["optimizer"]["params"]  # DeepSpeedCPUAdam
    with pytest.raises(GnnZeroError, match="offload needs ZeRO stage >= 1"):
        finalize_for_device(apply_overrides(base, EngineOverrides(zero_stage=0, offload="optimizer")), "cpu")
    with pytest.raises(GnnZeroError, match="enables both fp16 and bf16"):
        finalize_for_device({**base, "fp16": {"enabled": True}, "bf16": {"enabled": True}}, "cuda")
    with pytest.raises(GnnZeroError, match="offload_param needs ZeRO stage 3"):
        finalize_for_device(apply_overrides(base, EngineOverrides(offload="optimizer+params")), "cpu")


def test_misspelt_key_is_named(tmp_path):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"zero_optimisation": {"stage": 2}}))
    with pytest.raises(GnnZeroError, match="did you mean 'zero_optimization'"):
        load_ds_config(str(path))


# --- batches and loss --------------------------------------------------------------------

def test_prepare_batch_casts_floating_features_only():
    batch = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1], [1, 2]]),
                 edge_weight=torch.rand(2), loss_weight=torch.rand(4), y=torch.tensor([0, 1, 0, 1]))
    out = prepare_batch(batch, torch.device("cpu"), torch.bfloat16)
    assert out.x.dtype == torch.bfloat16
    assert out.edge_weight.dtype == out.loss_weight.dtype == torch.float32
    assert out.y.dtype == out.edge_index.dtype == torch.int64
    hetero = HeteroData()
    hetero["paper"].x = torch.randn(3, 2)
    hetero["author"].x = torch.randn(2, 2)
    hetero["author", "writes", "paper"].edge_index = torch.tensor([[0, 1], [1, 2]])
    hetero["author", "writes", "paper"].edge_attr = torch.randn(2, 5)
    out = prepare_batch(hetero, torch.device("cpu"), torch.float16)
    assert out["paper"].x.dtype == out["author"].x.dtype == torch.float16
    assert out["author", "writes", "paper"].edge_attr.dtype == torch.float16


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "gin", "pinsage"])
def test_bf16_batch_runs_through_a_bf16_model(arch):
    """The failure users report ("expected scalar type Float but found BFloat16") cannot happen,
    with GraphSAINT edge weights kept in fp32."""
    from gnnzero.models import build_model, forward_batch

    model = build_model(arch, 3, 8, 2, 2, dropout=0.0).to(torch.bfloat16)
    batch = Data(x=torch.randn(5, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]),
                 edge_weight=torch.rand(3))
    out = forward_batch(model, prepare_batch(batch, torch.device("cpu"), torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (5, 2)


def test_node_loss_closed_forms():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    mask = torch.tensor([True, False, True, True, False, True])
    batch = Data(y=y, loss_mask=mask)
    ce = [-F.log_softmax(logits[i].detach(), -1)[y[i]].item() for i in range(6)]
    expected_mean = sum(ce[i] for i in range(6) if mask[i]) / int(mask.sum())
    assert node_loss(logits, batch).item() == pytest.approx(expected_mean, rel=1e-6)
    # GraphSAINT (PyG examples/graph_saint.py): sum over training nodes of node_norm * CE.
    batch.loss_weight = torch.tensor([0.5, 9.0, 2.0, 0.25, 9.0, 1.0])
    expected = sum(batch.loss_weight[i].item() * ce[i] for i in range(6) if mask[i])
    assert node_loss(logits.bfloat16(), batch).item() == pytest.approx(expected, rel=1e-2)
    assert node_loss(logits, batch).item() == pytest.approx(expected, rel=1e-6)
    # No training node in the batch: zero loss, but a graph that still reaches the logits.
    batch.loss_mask = torch.zeros(6, dtype=torch.bool)
    loss = node_loss(logits, batch)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


# --- bf16 aggregation on very high-degree nodes --------------------------------------------

LEAVES = 5000


def star_graph() -> tuple[torch.Tensor, torch.Tensor]:
    """Hub 0 linked both ways to 5,000 leaves (features in [0.5, 1.5))."""
    leaves = torch.arange(1, LEAVES + 1)
    hub = torch.zeros_like(leaves)
    edge_index = torch.cat([torch.stack([leaves, hub]), torch.stack([hub, leaves])], dim=1)
    x = torch.rand(LEAVES + 1, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    return x, edge_index


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def test_star_graph_saturates_a_bf16_accumulator():
    """Control: summing the hub's 5,000 unit messages in a bf16 accumulator stalls at 256
    (8 mantissa bits: 256 + 1 == 256) - what GPU bf16 atomics in scatter do."""
    _, edge_index = star_graph()
    ones = torch.ones(edge_index.size(1), dtype=torch.bfloat16)
    degree = torch.zeros(LEAVES + 1, dtype=torch.bfloat16).index_add_(0, edge_index[1], ones)
    assert degree[0].item() == 256.0


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "gin"])
def test_bf16_aggregation_stays_close_to_fp32_on_a_star(arch):
    from gnnzero.models import build_model

    x, edge_index = star_graph()
    torch.manual_seed(0)
    model = build_model(arch, 8, 16, 4, 2, dropout=0.0).eval()
    with torch.no_grad():
        ref = model(x, edge_index)
        out = model.to(torch.bfloat16)(x.bfloat16(), edge_index)
    assert out.dtype == torch.bfloat16
    assert _relative_error(out[0], ref[0]) < 2e-2, "hub node"
    assert _relative_error(out[1:], ref[1:]) < 2e-2, "leaves"


# --- activation checkpointing ----------------------------------------------------------------

@pytest.mark.parametrize("shared", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(shared):
    """Recomputing each layer in backward (dropout included: RNG state is replayed) changes nothing."""
    from gnnzero.models import build_model

    x, edge_index = star_graph()
    x, edge_index = x[:300], edge_index[:, (edge_index < 300).all(0)]
    y = torch.arange(300) % 4
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model("sage", 8, 16, 4, 4, dropout=0.5, share_weights=shared,
                            rank=4 if shared else None, activation_checkpointing=checkpointing)
        torch.manual_seed(1)
        F.cross_entropy(model(x, edge_index), y).backward()
        grads.append({n.replace(".layer.", "."): p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-6, atol=1e-7, msg=name)


# --- checkpoint tags ---------------------------------------------------------------------------

def _tag(root: Path, step: int, complete: bool) -> None:
    (root / f"step{step}").mkdir(parents=True)
    (root / f"step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        (root / f"step{step}" / ckpt.META_FILE).write_text("{}")


def test_resume_tag_skips_a_save_killed_half_way(tmp_path):
    _tag(tmp_path, 2, True)
    _tag(tmp_path, 4, True)
    _tag(tmp_path, 6, False)                        # killed during the save
    (tmp_path / "latest").write_text("step6")       # DeepSpeed's rank 0 wrote it early
    assert ckpt.latest_tag(str(tmp_path)) == "step4"
    (tmp_path / "latest").write_text("")            # killed while rewriting 'latest'
    assert ckpt.latest_tag(str(tmp_path)) == "step4"
    (tmp_path / "latest").write_text("step2")       # 'latest' is trusted when complete
    assert ckpt.latest_tag(str(tmp_path)) == "step2"
    os.unlink(tmp_path / "latest")
    assert ckpt.latest_tag(str(tmp_path)) == "step4"
    ckpt._prune(str(tmp_path), "step4", keep=1)
    assert ckpt.step_tags(str(tmp_path)) == ["step4"]


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    assert ckpt.latest_tag(str(tmp_path / "missing")) is None
    _tag(tmp_path, 3, False)
    (tmp_path / "latest").write_text("step3")
    assert ckpt.latest_tag(str(tmp_path)) is None


def test_meta_differences_name_what_differs(tmp_path):
    saved = {"parameters": {"a.weight": [16, 8], "b.bias": [4]}, "world_size": 2, "zero_stage": 3,
             "model": {"hidden": 16}}
    run = {"parameters": {"a.weight": [32, 8], "c.bias": [4]}, "world_size": 1, "zero_stage": 3,
           "model": {"hidden": 32}}
    _tag(tmp_path, 5, False)
    (tmp_path / "step5" / ckpt.META_FILE).write_text(json.dumps(saved))
    with pytest.raises(GnnZeroError) as info:
        ckpt.check_compatible(str(tmp_path), "step5", run)
    message = str(info.value)
    assert "\n" not in message
    for part in ("parameter a.weight shape [16, 8] in checkpoint vs [32, 8] in this run",
                 "parameter c.bias only in this run", "world_size 2 in checkpoint vs 1 in this run",
                 "and 1 more"):
        assert part in message, message
    ckpt.check_compatible(str(tmp_path), "step5", saved)  # identical: no error


def test_epochs_without_improvement_counts_from_the_earliest_best_validation():
    from gnnzero.engine.trainer import epochs_without_improvement

    assert epochs_without_improvement([{"epoch": 0, "loss": 1.0}]) is None
    log = [{"epoch": 4, "val_accuracy": 0.5}, {"epoch": 9, "val_accuracy": 0.7},
           {"epoch": 14, "val_accuracy": 0.6}, {"epoch": 19, "loss": 0.3},
           {"epoch": 24, "val_accuracy": 0.7}]
    assert epochs_without_improvement(log) == 15  # ties keep the earlier best (epoch 9)
    log.append({"epoch": 29, "val_accuracy": 0.71})
    assert epochs_without_improvement(log) == 0
