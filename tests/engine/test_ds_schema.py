"""ds_config structural check (issue 17): every malformed shape is a one-line error."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gnnzero.engine.ds_config import load_ds_config
from gnnzero.engine.ds_schema import SCHEMA, check_train_batch_size
from gnnzero.errors import GnnZeroError

DS_CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"
BASE = json.loads((DS_CONFIGS / "zero2.json").read_text())


def _write(tmp_path: Path, edit) -> Path:
    """zero2.json with ``edit(config)`` applied, written to a temp file."""
    config = copy.deepcopy(BASE)
    edit(config)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    return path


def _error(tmp_path: Path, edit, *fragments: str) -> str:
    """``load_ds_config``'s message; asserts one line naming the file and ``fragments``."""
    path = _write(tmp_path, edit)
    with pytest.raises(GnnZeroError) as info:
        load_ds_config(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _set(path: str, value):
    """An edit that sets the dotted key ``path`` (creating sections) to ``value``."""
    def edit(config):
        *sections, leaf = path.split(".")
        node = config
        for name in sections:
            node = node.setdefault(name, {})
        node[leaf] = value
    return edit


@pytest.mark.parametrize("name", sorted(p.name for p in DS_CONFIGS.glob("*.json")))
def test_every_shipped_config_passes(name):
    load_ds_config(str(DS_CONFIGS / name))


def test_schema_lists_sections_before_their_keys():
    seen = set()
    for path in SCHEMA:
        parent = path.rsplit(".", 1)[0]
        assert "." not in path or parent in seen, path
        seen.add(path)


@pytest.mark.parametrize("path, value", [
    ("bf16", True), ("bfloat16", True), ("fp16", "on"), ("optimizer", "AdamW"),
    ("optimizer.params", [0.01]), ("scheduler", "WarmupLR"), ("scheduler.params", 100),
    ("zero_optimization.offload_optimizer", "cpu"), ("zero_optimization.offload_param", None),
])
def test_object_expected(tmp_path, path, value):
    def edit(config):
        if path.startswith("scheduler."):
            config["scheduler"] = {"type": "WarmupLR"}
        _set(path, value)(config)
    _error(tmp_path, edit, f"'{path}' must be an object like")


def test_bf16_true_names_the_fix(tmp_path):
    message = _error(tmp_path, _set("bf16", True))
    assert message.endswith(": 'bf16' must be an object like {\"enabled\": true}, got true; "
                            "write \"bf16\": {\"enabled\": true}"), message


def test_zero_optimization_not_an_object(tmp_path):
    _error(tmp_path, _set("zero_optimization", 2), "'zero_optimization' must be an object")


@pytest.mark.parametrize("path, value", [
    ("bf16.enabled", "true"), ("fp16.enabled", 1), ("zero_optimization.overlap_comm", "false"),
    ("zero_optimization.contiguous_gradients", 0), ("wall_clock_breakdown", "no"),
    ("zero_optimization.offload_optimizer.pin_memory", "yes"),
    ("optimizer.params.torch_adam", 1),
])
def test_bool_expected(tmp_path, path, value):
    message = _error(tmp_path, _set(path, value), f"'{path}' must be true or false")
    if value in ("true", 1):
        assert message.endswith(f'write "{path.rsplit(".", 1)[-1]}": true'), message


@pytest.mark.parametrize("path, value", [
    ("optimizer.params.lr", "0.01"), ("gradient_clipping", "1.0"),
    ("gradient_accumulation_steps", "4"), ("steps_per_print", None),
    ("zero_optimization.reduce_bucket_size", "lots"), ("fp16.loss_scale", [0]),
    ("optimizer.params.eps", float("nan")), ("optimizer.params.betas", [0.9]),
    ("optimizer.params.betas", "0.9,0.999"), ("gradient_accumulation_steps", 2.0),
    ("zero_optimization.allgather_bucket_size", 5.5e7 + 0.5),
])
def test_number_expected(tmp_path, path, value):
    _error(tmp_path, _set(path, value), f"'{path}' must be ")


def test_quoted_number_fix_unquotes_it(tmp_path):
    message = _error(tmp_path, _set("optimizer.params.lr", "0.01"),
                     "'optimizer.params.lr' must be a number >= 0, got \"0.01\"")
    assert message.endswith('write "lr": 0.01'), message


@pytest.mark.parametrize("path, value, expected", [
    ("gradient_clipping", -1.0, ">= 0"), ("gradient_accumulation_steps", 0, ">= 1"),
    ("train_micro_batch_size_per_gpu", 0, ">= 1"), ("train_batch_size", 0, ">= 1"),
    ("steps_per_print", 0, ">= 1"), ("optimizer.params.lr", -0.1, ">= 0"), ("optimizer.params.weight_decay", -1e-4, ">= 0"),
    ("optimizer.params.eps", 0.0, "> 0"), ("optimizer.params.betas", [0.9, 1.0], "[0, 1)"),
    ("fp16.loss_scale", -1, ">= 0"), ("fp16.initial_scale_power", -2, ">= 0"),
    ("fp16.loss_scale_window", 0, ">= 1"), ("fp16.hysteresis", 0, ">= 1"),
    ("fp16.min_loss_scale", 0, ">= 1"),
    ("zero_optimization.reduce_bucket_size", 0, "> 0"),
    ("zero_optimization.stage3_prefetch_bucket_size", -1, ">= 0"),
    ("zero_optimization.offload_optimizer.ratio", 1.5, "in [0, 1]"),
])
def test_out_of_range(tmp_path, path, value, expected):
    _error(tmp_path, _set(path, value), f"'{path}' must be ", expected)


@pytest.mark.parametrize("stage", [4, -1, "2"])
def test_stage_out_of_range(tmp_path, stage):
    # check_keys (the unknown-key check, which runs first) already refuses these
    _error(tmp_path, _set("zero_optimization.stage", stage), "zero_optimization.stage must be",
           f"got {stage!r}")


def test_integral_float_bucket_size_passes(tmp_path):
    load_ds_config(str(_write(tmp_path, _set("zero_optimization.reduce_bucket_size", 5e8))))


@pytest.mark.parametrize("path", [
    "gradient_clipping", "gradient_accumulation_steps", "optimizer.params.lr",
    "fp16.loss_scale", "zero_optimization.reduce_bucket_size", "zero_optimization.stage",
])
def test_bool_is_not_a_number(tmp_path, path):
    _error(tmp_path, _set(path, True), f"'{path}' must be ", "got true")


def test_stage_true_is_not_stage_one(tmp_path):
    _error(tmp_path, _set("zero_optimization.stage", True),
           "'zero_optimization.stage' must be an integer from 0 to 3, got true")


@pytest.mark.parametrize("name", ["AdamW", "adamw", "ADAM", "Lamb", "lion", "SGD", "RMSprop"])
def test_known_optimizer_types_pass(tmp_path, name):
    load_ds_config(str(_write(tmp_path, _set("optimizer.type", name))))


@pytest.mark.parametrize("name, hint", [("AdamWW", '"AdamW"'), ("OneBitAdam", None),
                                        ("sgd", '"SGD"'), (3, None)])
def test_unknown_optimizer_type(tmp_path, name, hint):
    message = _error(tmp_path, _set("optimizer.type", name), "'optimizer.type' must be one of")
    if hint:
        assert message.endswith(f'write "type": {hint}'), message


def test_optimizer_without_type(tmp_path):
    _error(tmp_path, lambda c: c["optimizer"].pop("type"), "'optimizer.type' is missing")


def test_scheduler_types(tmp_path):
    load_ds_config(str(_write(tmp_path, _set("scheduler", {"type": "WarmupLR",
                                                           "params": {"warmup_num_steps": 10}}))))
    load_ds_config(str(_write(tmp_path, _set("scheduler", {"type": "StepLR",
                                                           "params": {"step_size": 10}}))))
    _error(tmp_path, _set("scheduler", {"type": "Warmup"}), "'scheduler.type' must be one of")
    _error(tmp_path, _set("scheduler", {"params": {}}), "'scheduler.type' is missing")
    _error(tmp_path, _set("scheduler", {"type": "WarmupLR", "params": {"warmup_num_steps": "10"}}),
           "'scheduler.params.warmup_num_steps' must be an integer")


@pytest.mark.parametrize("section", ["offload_optimizer", "offload_param"])
@pytest.mark.parametrize("device", ["gpu", "CPU", "", True])
def test_bad_offload_device(tmp_path, section, device):
    path = f"zero_optimization.{section}.device"
    _error(tmp_path, _set(path, device), f"'{path}' must be one of none, cpu, nvme")


def test_activation_checkpointing_refused(tmp_path):
    _error(tmp_path, _set("activation_checkpointing", {"partition_activations": True}),
           "'activation_checkpointing'", "remove it and pass --activation-checkpointing")


def test_bf16_and_bfloat16_both_refused(tmp_path):
    _error(tmp_path, _set("bfloat16", {"enabled": True}), "'bf16' and 'bfloat16'")


def test_micro_batch_above_one_refused(tmp_path):
    _error(tmp_path, _set("train_micro_batch_size_per_gpu", 4),
           "'train_micro_batch_size_per_gpu' must be 1", "got 4", "--batch-size",
           "--clusters-per-batch", "gradient_accumulation_steps", "--grad-accum")


@pytest.mark.parametrize("world, accum, total", [(1, 1, 1), (1, 4, 4), (2, 1, 2), (2, 3, 6)])
def test_train_batch_size_match(tmp_path, world, accum, total):
    def edit(config):
        config.update(train_batch_size=total, gradient_accumulation_steps=accum)
    path = _write(tmp_path, edit)
    check_train_batch_size(load_ds_config(str(path)), world, str(path))


@pytest.mark.parametrize("world, accum, total, fix", [
    (1, 1, 8, 'set "gradient_accumulation_steps": 8'),
    (2, 1, 8, 'set "gradient_accumulation_steps": 4'),
    (2, 2, 3, "make train_batch_size a multiple of the world size (2)"),
])
def test_train_batch_size_mismatch(tmp_path, world, accum, total, fix):
    def edit(config):
        config.update(train_batch_size=total, gradient_accumulation_steps=accum)
    path = _write(tmp_path, edit)
    config = load_ds_config(str(path))
    with pytest.raises(GnnZeroError) as info:
        check_train_batch_size(config, world, str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "'train_batch_size'" in message
    assert f"(1) x gradient_accumulation_steps ({accum}) x world size ({world}) = {accum * world}" \
        in message, message
    assert message.endswith(f"drop 'train_batch_size' or {fix}"), message


def test_train_batch_size_absent_is_fine():
    check_train_batch_size(copy.deepcopy(BASE), 2, "zero2.json")
