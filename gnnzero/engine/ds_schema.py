"""Structural check of a ds_config: every key gnnzero reads or passes on has the right shape.

DeepSpeed reads most scalars with ``dict.get`` and coerces the rest with lax pydantic,
so ``"bf16": true`` ends in an ``AttributeError``, ``"lr": "0.01"`` reaches the
optimizer as a string and ``"stage": true`` passes as stage 1.  ``check_ds_config``
walks the table ``SCHEMA`` (key path -> expected kind and range) and turns the first
malformed value into a one-line ``GnnZeroError`` naming the file, the key path, the
value, what is expected and the fix.  Keys absent from the file are not checked (the
defaults are DeepSpeed's); ``check_keys`` in ``ds_config.py`` rejects unknown keys.

Three refusals are gnnzero's own: DeepSpeed's ``activation_checkpointing`` section
(gnnzero checkpoints GNN layers itself, ``--activation-checkpointing``), a
``train_micro_batch_size_per_gpu`` other than 1 (one micro-batch is one graph
mini-batch) and a ``train_batch_size`` that disagrees with micro x accumulation x
world size (``check_train_batch_size``, called once the world size is known).
Types and ranges follow DeepSpeed 0.19 (``runtime/config.py``, ``precision_config.py``,
``zero/config.py``, ``zero/offload_config.py``, ``lr_schedules.py``).
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import GnnZeroError

__all__ = ["Rule", "SCHEMA", "check_ds_config", "check_train_batch_size"]

# deepspeed/runtime/config.py DEEPSPEED_OPTIMIZERS (matched case-insensitively, as
# DeepSpeed lower-cases them); any torch.optim optimizer class is accepted by exact name.
DEEPSPEED_OPTIMIZERS = ("Adagrad", "Adam", "AdamW", "Lamb", "MuAdam", "MuAdamW", "MuSGD",
                        "Lion", "Muon")
# deepspeed/runtime/lr_schedules.py classes (exact names); torch.optim.lr_scheduler too.
DEEPSPEED_SCHEDULERS = ("LRRangeTest", "OneCycle", "WarmupLR", "WarmupDecayLR",
                        "WarmupCosineLR")
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


@dataclass(frozen=True)
class Rule:
    """What one key must hold.

    ``kind``: object | bool | int (a JSON integer) | size (an integral number, 5e8 too)
    | number | str | choice | betas.  ``lo``/``hi`` bound numbers (``lo_open`` excludes
    ``lo``); ``choices`` lists the strings a choice accepts (``ci``: compared
    case-insensitively; ``torch``: a class of that torch module is accepted too).
    ``example`` is a good value, in JSON, for the fix; ``required`` keys must be present
    once their section is.
    """

    kind: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    ci: bool = False
    torch: Optional[str] = None
    example: Optional[str] = None
    required: bool = False


OBJ, BOOL = Rule("object", example="{}"), Rule("bool")
POS_INT, NONNEG_INT = Rule("int", lo=1), Rule("int", lo=0)
POS_SIZE, NONNEG_SIZE = Rule("size", lo=0, lo_open=True), Rule("size", lo=0)


def _section(name: str, example: str, children: dict[str, Rule]) -> dict[str, Rule]:
    rules = {name: Rule("object", example=example)}
    rules.update({f"{name}.{key}": rule for key, rule in children.items()})
    return rules


_BF16 = {key: BOOL for key in ("enabled", "immediate_grad_update", "check_grad_overflow",
                               "bf16_master_weights_and_grads", "bf16_optimizer_states")}
_OFFLOAD = {"device": Rule("choice", choices=OFFLOAD_DEVICES, example='"cpu"'),
            "nvme_path": Rule("str", example='"/local_nvme"'),
            "buffer_count": NONNEG_INT, "buffer_size": NONNEG_SIZE, "max_in_cpu": NONNEG_SIZE,
            "pin_memory": BOOL, "pipeline_read": BOOL, "pipeline_write": BOOL, "fast_init": BOOL,
            "ratio": Rule("number", lo=0, hi=1), "super_offload": BOOL,
            "cpuadam_cores_perc": Rule("number", lo=0, hi=1)}
_ZERO_BOOLS = (
    "contiguous_gradients", "reduce_scatter", "use_multi_rank_bucket_allreduce",
    "allgather_partitions", "overlap_comm", "load_from_fp32_weights", "elastic_checkpoint",
    "cpu_offload_param", "cpu_offload_use_pin_memory", "cpu_offload",
    "gather_16bit_weights_on_model_save", "stage3_gather_16bit_weights_on_model_save",
    "stage3_gather_fp16_weights_on_model_save", "use_all_reduce_for_fetch_params",
    "stage3_use_all_reduce_for_fetch_params", "ignore_unused_parameters", "legacy_stage1",
    "round_robin_gradients", "zero_quantized_weights", "zero_quantized_nontrainable_weights",
    "zero_quantized_gradients", "memory_efficient_linear", "pipeline_loading_checkpoint",
    "override_module_apply", "log_trace_cache_warnings", "allgather_sequential",
    "stage3_allgather_sequential", "compute_grad_norm", "enable_sanity_checks")
_ZERO_SIZES = (  # DeepSpeed: ge=0; each also spelt with a stage3_ prefix
    "prefetch_bucket_size", "param_persistence_threshold", "model_persistence_threshold",
    "max_live_parameters", "max_reuse_distance", "module_granularity_threshold")

# key path -> rule; a section comes before its keys.
SCHEMA: dict[str, Rule] = {
    "train_batch_size": POS_INT,
    "train_micro_batch_size_per_gpu": POS_INT,
    "gradient_accumulation_steps": POS_INT,
    "gradient_clipping": Rule("number", lo=0, example="1.0"),
    "steps_per_print": POS_INT,
    "gradient_predivide_factor": Rule("number", lo=0, lo_open=True),
    **{key: BOOL for key in ("wall_clock_breakdown", "memory_breakdown", "prescale_gradients",
                             "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer",
                             "dump_state", "sparse_gradients", "disable_allgather")},
    **_section("fp16", '{"enabled": true}', {
        "enabled": BOOL, "auto_cast": BOOL, "consecutive_hysteresis": BOOL,
        "fp16_master_weights_and_grads": BOOL,
        "loss_scale": Rule("number", lo=0, example="0"),
        "initial_scale_power": Rule("int", lo=0, example="16"),
        "loss_scale_window": Rule("int", lo=1, example="1000"),
        "hysteresis": Rule("int", lo=1, example="2"),
        "min_loss_scale": Rule("int", lo=1, example="1")}),
    **_section("bf16", '{"enabled": true}', _BF16),
    **_section("bfloat16", '{"enabled": true}', _BF16),
    **_section("zero_optimization", '{"stage": 2}', {
        "stage": Rule("int", lo=0, hi=3, example="2"),
        **{key: BOOL for key in _ZERO_BOOLS},
        "reduce_bucket_size": Rule("size", lo=0, lo_open=True, example="500000000"),
        "allgather_bucket_size": Rule("size", lo=0, lo_open=True, example="500000000"),
        "sub_group_size": NONNEG_SIZE,
        "zero_hpz_partition_size": NONNEG_INT,
        **{key: NONNEG_SIZE for key in _ZERO_SIZES},
        **{f"stage3_{key}": NONNEG_SIZE for key in _ZERO_SIZES}}),
    **_section("zero_optimization.offload_optimizer", '{"device": "cpu"}', _OFFLOAD),
    **_section("zero_optimization.offload_param", '{"device": "cpu"}', _OFFLOAD),
    **_section("optimizer", '{"type": "AdamW", "params": {"lr": 0.001}}', {
        "type": Rule("choice", choices=DEEPSPEED_OPTIMIZERS, ci=True, torch="optim",
                     example='"AdamW"', required=True),
        "legacy_fusion": BOOL}),
    **_section("optimizer.params", '{"lr": 0.001}', {
        "lr": Rule("number", lo=0, example="0.001"),  # 0 freezes the weights (tests use it)
        "weight_decay": Rule("number", lo=0, example="0.0"),
        "eps": Rule("number", lo=0, lo_open=True, example="1e-08"),
        "betas": Rule("betas", example="[0.9, 0.999]"),
        "momentum": Rule("number", lo=0),
        **{key: BOOL for key in ("torch_adam", "adam_w_mode", "bias_correction", "amsgrad",
                                 "nesterov", "fused", "foreach")}}),
    **_section("scheduler", '{"type": "WarmupLR", "params": {"warmup_num_steps": 100}}', {
        "type": Rule("choice", choices=DEEPSPEED_SCHEDULERS, torch="optim.lr_scheduler",
                     example='"WarmupLR"', required=True)}),
    **_section("scheduler.params", '{"warmup_num_steps": 100}', {
        "warmup_min_lr": Rule("number", lo=0), "warmup_max_lr": Rule("number", lo=0),
        "warmup_num_steps": NONNEG_INT, "total_num_steps": POS_INT}),
}

_KIND_TEXT = {"object": "an object", "bool": "true or false", "int": "an integer",
              "size": "an integer", "number": "a number", "str": "a string",
              "betas": "a list of two numbers in [0, 1)"}


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(rule: Rule) -> str:
    if rule.lo is None:
        return ""
    if rule.hi is None:
        return f" {'>' if rule.lo_open else '>='} {rule.lo:g}"
    if rule.kind == "int":
        return f" from {rule.lo:g} to {rule.hi:g}"
    return f" in {'(' if rule.lo_open else '['}{rule.lo:g}, {rule.hi:g}]"


def _in_range(x: float, rule: Rule) -> bool:
    low_ok = rule.lo is None or (x > rule.lo if rule.lo_open else x >= rule.lo)
    high_ok = rule.hi is None or x <= rule.hi
    return low_ok and high_ok


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_ok(value: Any, rule: Rule) -> bool:
    if not _is_number(value):
        return False
    if rule.kind == "int" and not isinstance(value, int):
        return False
    if rule.kind == "size" and not float(value).is_integer():
        return False
    return _in_range(value, rule)


def _choices(rule: Rule) -> list[str]:
    names = list(rule.choices)
    if rule.torch:  # torch is imported only for names DeepSpeed does not list itself
        import torch.optim

        module, base = {"optim": (torch.optim, torch.optim.Optimizer),
                        "optim.lr_scheduler": (torch.optim.lr_scheduler,
                                               torch.optim.lr_scheduler.LRScheduler)}[rule.torch]
        names += sorted(name for name, obj in vars(module).items() if isinstance(obj, type)
                        and issubclass(obj, base) and obj is not base and name[0] != "_")
    return names


def _choice_ok(value: Any, rule: Rule) -> bool:
    if not isinstance(value, str):
        return False
    if value in rule.choices or (rule.ci and value.lower() in {c.lower() for c in rule.choices}):
        return True
    return bool(rule.torch) and value in _choices(rule)


def _expected(rule: Rule) -> str:
    if rule.kind == "choice":
        case = " (any case)" if rule.ci else ""
        extra = f" or a torch.{rule.torch} class" if rule.torch else ""
        return f"one of {', '.join(rule.choices)}{case}{extra}"
    if rule.kind == "object" and rule.example:
        return f"an object like {rule.example}"
    return _KIND_TEXT[rule.kind] + (_bounds(rule) if rule.kind in ("int", "size", "number") else "")


def _fix(leaf: str, value: Any, rule: Rule) -> str:
    """The one-line remedy for ``value`` under ``rule``."""
    good: Optional[str] = None
    if rule.kind == "object" and isinstance(value, bool) and "enabled" in (rule.example or ""):
        good = f'{{"enabled": {_show(value)}}}'
    elif rule.kind == "bool" and (value in ("true", "false") or (
            not isinstance(value, bool) and value in (0, 1))):
        good = "true" if value in ("true", 1) else "false"
    elif rule.kind in ("int", "size", "number") and isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            parsed = math.nan
        if math.isfinite(parsed) and _number_ok(int(parsed) if parsed.is_integer()
                                                else parsed, rule):
            good = str(int(parsed)) if parsed.is_integer() else value.strip()  # unquoted
    elif rule.kind == "choice" and isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), [c.lower() for c in _choices(rule)], n=1,
                                         cutoff=0.8)
        named = {c.lower(): c for c in _choices(rule)}
        if close:
            good = f'"{named[close[0]]}"'
    good = good or rule.example
    if good is not None:
        return f'write "{leaf}": {good}'
    return f'set "{leaf}" to {_expected(rule)}'


def _fail(source: str, path: str, value: Any, rule: Rule) -> GnnZeroError:
    leaf = path.rsplit(".", 1)[-1]
    return GnnZeroError(f"ds_config {source}: '{path}' must be {_expected(rule)}, got "
                        f"{_show(value)}; {_fix(leaf, value, rule)}")


def _valid(value: Any, rule: Rule) -> bool:
    kind = rule.kind
    if kind == "object":
        return isinstance(value, dict)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "choice":
        return _choice_ok(value, rule)
    if kind == "betas":
        return (isinstance(value, list) and len(value) == 2
                and all(_is_number(b) and 0 <= b < 1 for b in value))
    return _number_ok(value, rule)


def _refusals(config: dict[str, Any], source: str) -> None:
    """gnnzero's own refusals: keys DeepSpeed would accept and gnnzero would ignore."""
    where = f"ds_config {source}"
    if "activation_checkpointing" in config:
        raise GnnZeroError(f"{where}: 'activation_checkpointing' is DeepSpeed's own "
                           f"checkpointing section, which gnnzero would silently ignore (it "
                           f"checkpoints GNN layers itself); remove it and pass "
                           f"--activation-checkpointing")
    if "bf16" in config and "bfloat16" in config:
        raise GnnZeroError(f"{where}: both 'bf16' and 'bfloat16' are set and DeepSpeed reads "
                           f"only 'bf16'; keep one of them")
    micro = config.get("train_micro_batch_size_per_gpu", 1)
    if micro != 1:
        raise GnnZeroError(f"{where}: 'train_micro_batch_size_per_gpu' must be 1 in gnnzero "
                           f"(one micro-batch is one graph mini-batch), got {_show(micro)}; "
                           f"set it to 1, size the mini-batch with --batch-size / "
                           f"--clusters-per-batch and combine mini-batches with "
                           f"gradient_accumulation_steps (--grad-accum)")


def _lookup(config: dict[str, Any], path: str) -> tuple[bool, Any, Optional[dict]]:
    """(present, value, parent) for a dotted key path; parent is None when a section is absent."""
    node: Any = config
    *sections, leaf = path.split(".")
    for name in sections:
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return False, None, None
    return leaf in node, node.get(leaf), node


def check_ds_config(config: dict[str, Any], source: str = "(in memory)") -> None:
    """Raise a one-line ``GnnZeroError`` for the first key of ``config`` that breaks ``SCHEMA``."""
    for path, rule in SCHEMA.items():
        present, value, parent = _lookup(config, path)
        if present and not _valid(value, rule):
            raise _fail(source, path, value, rule)
        if rule.required and parent is not None and not present:
            leaf = path.rsplit(".", 1)[-1]
            raise GnnZeroError(f"ds_config {source}: '{path}' is missing, so DeepSpeed would "
                               f"silently build none; add \"{leaf}\": {rule.example}")
    _refusals(config, source)


def check_train_batch_size(config: dict[str, Any], world_size: int, source: str) -> None:
    """If ``train_batch_size`` is set, it must equal micro (1) x accumulation x ``world_size``.

    DeepSpeed derives the global batch from the other two; a disagreeing value would be
    dropped (today) or fail deep inside DeepSpeed, so it is refused here with the numbers.
    """
    if "train_batch_size" not in config:
        return
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise GnnZeroError(f"world size must be a positive integer, got {world_size!r}; "
                           f"check the WORLD_SIZE environment variable")
    total = config["train_batch_size"]
    micro = config.get("train_micro_batch_size_per_gpu", 1)
    accum = config.get("gradient_accumulation_steps", 1)
    if _number_ok(total, POS_INT) and total == micro * accum * world_size:
        return
    per_rank = total / (micro * world_size) if _is_number(total) else math.nan
    fix = (f'set "gradient_accumulation_steps": {int(per_rank)}' if per_rank >= 1
           and float(per_rank).is_integer() else
           f"make train_batch_size a multiple of the world size ({world_size})")
    raise GnnZeroError(f"ds_config {source}: 'train_batch_size' is {_show(total)} but "
                       f"train_micro_batch_size_per_gpu ({micro}) x gradient_accumulation_steps "
                       f"({accum}) x world size ({world_size}) = {micro * accum * world_size}; "
                       f"drop 'train_batch_size' or {fix}")


def schema_markdown() -> str:
    """The README's ds_config key catalogue: every checked key path and what it must hold."""
    lines = ["| ds_config key | must be |", "|---|---|"]
    lines += [f"| `{path}` | {_expected(rule)}{' (required)' if rule.required else ''} |"
              for path, rule in SCHEMA.items()]
    return "\n".join(lines)
