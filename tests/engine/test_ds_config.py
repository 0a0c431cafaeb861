"""DeepSpeed config files: the shipped ones validate, overrides merge without touching the file,
device rules, misspelt keys named."""
from __future__ import annotations

import copy
import json

import pytest

from gnnzero.engine.ds_config import (EngineOverrides, apply_overrides, finalize_for_device,
                                      load_ds_config, offload_of, precision_of, zero_stage_of)
from gnnzero.errors import GnnZeroError
from tests.helpers import REPO


CONFIGS = sorted((REPO / "ds_configs").glob("*.json"))


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


def test_optimizer_override_picks_adam_with_l2_or_decoupled_decay():
    """The paper's optimizer: a real DeepSpeed engine (world of one, CPU) builds torch's Adam
    (L2 decay added to the gradient) for --optimizer adam-l2 and AdamW for adamw; the plain
    loop builds the same."""
    import torch

    from gnnzero.engine.plain import optimizer_from_ds_config
    from gnnzero.engine.runtime import initialize_engine
    from tests.helpers import world_of_one_process_group

    base = load_ds_config(str(REPO / "ds_configs" / "zero2.json"))
    with world_of_one_process_group():
        for name, cls in (("adam-l2", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
            merged = finalize_for_device(apply_overrides(base, EngineOverrides(optimizer=name)),
                                         "cpu")
            engine = initialize_engine(torch.nn.Linear(3, 2), merged)[0]
            inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
            assert type(inner) is cls, (name, type(inner))
            assert inner.param_groups[0]["weight_decay"] == 5e-4
            assert inner.defaults["fused"] is True  # torch's fused CPU kernel
            assert type(optimizer_from_ds_config(torch.nn.Linear(3, 2), merged)) is cls


def test_device_rules():
    base = load_ds_config(str(REPO / "ds_configs" / "zero2.json"))
    cpu = finalize_for_device(apply_overrides(base, EngineOverrides()), "cpu")
    assert cpu["optimizer"]["params"]["torch_adam"] is True  # FusedAdam is CUDA-only
    assert cpu["optimizer"]["params"]["fused"] is True        # torch's fused CPU AdamW
    assert cpu["zero_optimization"]["contiguous_gradients"] is False
    cuda = finalize_for_device(apply_overrides(base, EngineOverrides()), "cuda")
    assert not {"torch_adam", "fused"} & set(cuda["optimizer"]["params"])
    assert "contiguous_gradients" not in cuda["zero_optimization"]  # DeepSpeed's default: true
    offload = finalize_for_device(apply_overrides(base, EngineOverrides(offload="optimizer")), "cpu")
    assert "torch_adam" not in offload["optimizer"]["params"]  # DeepSpeedCPUAdam
    assert "contiguous_gradients" not in offload["zero_optimization"]
    stage0 = finalize_for_device(apply_overrides(base, EngineOverrides(zero_stage=0)), "cpu")
    assert "contiguous_gradients" not in stage0["zero_optimization"]
    # what the config says itself is kept
    own = copy.deepcopy(base)
    own["optimizer"]["params"]["foreach"] = True
    own["zero_optimization"]["contiguous_gradients"] = True
    own = finalize_for_device(own, "cpu")
    assert "fused" not in own["optimizer"]["params"]  # torch refuses fused with foreach
    assert own["zero_optimization"]["contiguous_gradients"] is True
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


def test_every_zero_key_deepspeed_reads_is_accepted():
    """The key check knows every field and alias of DeepSpeed's own ZeRO config model."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    from gnnzero.engine.ds_config import check_keys

    for name, field in DeepSpeedZeroConfig.model_fields.items():
        for key in {name, field.alias} - {None}:
            check_keys({"zero_optimization": {key: None} | {"stage": 3}})
