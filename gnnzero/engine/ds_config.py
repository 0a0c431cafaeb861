"""DeepSpeed config: load a ds_config file, merge command-line overrides, validate.

Everything is checked *before* ``deepspeed.initialize``: a missing or malformed
file, a misspelt top-level key (DeepSpeed silently ignores those, so a typo in
``zero_optimization`` would quietly train without ZeRO), an impossible
precision on this device.  The merged config is what gets written beside the
run's metrics.

Precision: bf16 runs on CPU and GPU (fp32 master weights and optimizer states,
bf16 activations; message aggregation stays fp32 in ``models/convs.py``).  fp16
needs a CUDA GPU: DeepSpeed's dynamic loss scaling (``"loss_scale": 0``, set by
``--precision fp16``) and its overflow check run only there, so fp16 is refused
on CPU before DeepSpeed starts.  A step whose fp16 gradients overflowed is skipped
by DeepSpeed (the loss scale halves); the trainer reports the count as
``skipped_steps`` in ``metrics.json`` (``engine.skipped_steps``; always 0 in
fp32/bf16).
"""
from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import GnnZeroError
from .ds_schema import check_ds_config
from ..utils.settings import check_settings, setting

PRECISIONS = ("fp32", "bf16", "fp16")
OFFLOAD_MODES = ("none", "optimizer", "optimizer+params")

# Top-level keys DeepSpeed's config reader knows (deepspeed/runtime/config.py and
# constants.py, v0.16-0.19); anything else is almost always a typo.
KNOWN_TOP_LEVEL_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "optimizer", "scheduler", "fp16", "bf16", "bfloat16", "amp", "torch_autocast",
    "zero_optimization", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer",
    "gradient_clipping", "prescale_gradients", "gradient_predivide_factor",
    "steps_per_print", "wall_clock_breakdown", "memory_breakdown", "dump_state",
    "activation_checkpointing", "flops_profiler", "tensorboard", "wandb", "csv_monitor",
    "comet", "comms_logger", "checkpoint", "data_types", "communication_data_type",
    "seq_parallel_communication_data_type", "sparse_gradients", "disable_allgather",
    "aio", "elasticity", "autotuning", "pipeline", "data_efficiency", "curriculum_learning",
    "compression_training", "eigenvalue", "progressive_layer_drop", "quantize_training",
    "sparse_attention", "weight_quantization", "nebula", "hybrid_engine", "compile",
    "use_data_before_expert_parallelism", "dataloader_drop_last", "timers",
    "graph_harvesting", "zero_optimization_stage", "mics_shard_size",
    "mics_hierarchical_params_gather", "load_universal_checkpoint", "use_node_local_storage",
    "seed", "tensor_parallel", "domino",
}
ZERO_KEYS = {
    "stage", "contiguous_gradients", "reduce_scatter", "reduce_bucket_size",
    "allgather_partitions", "allgather_bucket_size", "overlap_comm", "load_from_fp32_weights",
    "elastic_checkpoint", "offload_param", "offload_optimizer", "sub_group_size",
    "cpu_offload_param", "cpu_offload_use_pin_memory", "cpu_offload", "prefetch_bucket_size",
    "stage3_prefetch_bucket_size", "param_persistence_threshold",
    "stage3_param_persistence_threshold", "model_persistence_threshold",
    "stage3_model_persistence_threshold", "max_live_parameters", "stage3_max_live_parameters",
    "max_reuse_distance", "stage3_max_reuse_distance", "gather_16bit_weights_on_model_save",
    "stage3_gather_16bit_weights_on_model_save", "stage3_gather_fp16_weights_on_model_save",
    "ignore_unused_parameters", "legacy_stage1", "round_robin_gradients",
    "zero_hpz_partition_size", "zero_quantized_weights", "zero_quantized_nontrainable_weights",
    "zero_quantized_gradients", "memory_efficient_linear", "pipeline_loading_checkpoint",
    "override_module_apply", "mics_shard_size", "mics_hierarchical_params_gather",
    "use_multi_rank_bucket_allreduce", "log_trace_cache_warnings", "module_granularity_threshold",
    "use_all_reduce_for_fetch_params", "stage3_use_all_reduce_for_fetch_params",
    "ignore_frozen_parameters", "zeropp_loco_param", "reduce_scatter_dtype",
    "stage3_module_granularity_threshold", "allgather_sequential", "stage3_allgather_sequential",
    "parameter_alignment", "enable_sanity_checks", "leaf_module", "zenflow", "compute_grad_norm",
    "save_muon_momentum_buffer_in_memory",
}


# --optimizer -> DeepSpeed's optimizer type and adam_w_mode (False: L2 decay in the gradient)
OPTIMIZERS = {"adamw": ("AdamW", True), "adam-l2": ("Adam", False)}


@dataclass(kw_only=True)
class EngineOverrides:
    """Command-line overrides merged into the ds_config file (none = keep the file's value)."""

    zero_stage: Optional[int] = setting(None, "ZeRO stage", choices=(0, 1, 2, 3),
                                        none_means="the file's")
    precision: Optional[str] = setting(None, "compute precision (fp16 needs a CUDA GPU)",
                                       choices=PRECISIONS, none_means="the file's")
    grad_accum: Optional[int] = setting(None, "graph mini-batches per optimizer step", low=1,
                                        none_means="the file's")
    grad_clip: Optional[float] = setting(None, "gradient-norm clipping (0 = off)", low=0,
                                         none_means="the file's")
    offload: Optional[str] = setting(None, "ZeRO CPU offload", choices=OFFLOAD_MODES,
                                     none_means="the file's")
    lr: Optional[float] = setting(None, "learning rate (0 freezes the weights)", low=0,
                                  none_means="the file's")
    weight_decay: Optional[float] = setting(None, "optimizer weight decay", low=0,
                                            none_means="the file's")
    optimizer: Optional[str] = setting(
        None, "adamw = Adam with decoupled weight decay; adam-l2 = Adam with the decay added "
        "to the gradient (L2), the GCN paper's optimizer", choices=tuple(OPTIMIZERS),
        none_means="the file's")

    def __post_init__(self) -> None:
        check_settings(self)


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_ds_config(path: str) -> dict[str, Any]:
    """Read and structurally check a ds_config JSON file."""
    if not path:
        raise GnnZeroError("--ds_config is required; pass one of ds_configs/*.json")
    if not os.path.isfile(path):
        raise GnnZeroError(f"--ds_config {path} does not exist; pass one of ds_configs/*.json")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except json.JSONDecodeError as exc:
        raise GnnZeroError(f"--ds_config {path} is not valid JSON (line {exc.lineno}, column "
                           f"{exc.colno}: {exc.msg}); fix the file or start from "
                           f"ds_configs/zero2.json") from exc
    if not isinstance(config, dict):
        raise GnnZeroError(f"--ds_config {path} must hold a JSON object, got {type(config).__name__}")
    check_keys(config, path)
    check_ds_config(config, path)  # shapes, types and ranges of every key gnnzero reads
    return config


def check_keys(config: dict[str, Any], source: str = "ds_config") -> None:
    """Reject unknown top-level and zero_optimization keys, naming the closest known one."""
    for key in config:
        if key not in KNOWN_TOP_LEVEL_KEYS:
            raise GnnZeroError(f"{source}: unknown DeepSpeed key '{key}'{_suggest(key, KNOWN_TOP_LEVEL_KEYS)};"
                               f" remove or correct it")
    zero = config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise GnnZeroError(f"{source}: 'zero_optimization' must be an object like {{\"stage\": 2}}")
    for key in zero:
        if key not in ZERO_KEYS:
            raise GnnZeroError(f"{source}: unknown zero_optimization key '{key}'"
                               f"{_suggest(key, ZERO_KEYS)}; remove or correct it")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise GnnZeroError(f"{source}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")


def precision_of(config: dict[str, Any]) -> str:
    """``fp16``, ``bf16`` or ``fp32`` as the config asks."""
    if config.get("fp16", {}).get("enabled", False):
        return "fp16"
    if config.get("bf16", config.get("bfloat16", {})).get("enabled", False):
        return "bf16"
    return "fp32"


def zero_stage_of(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def offload_of(config: dict[str, Any]) -> str:
    zero = config.get("zero_optimization", {})
    parts = [name for name in ("optimizer", "param")
             if zero.get(f"offload_{name}", {}).get("device", "none") not in ("none", None)]
    return "+".join(parts) or "none"


def apply_overrides(config: dict[str, Any], overrides: EngineOverrides) -> dict[str, Any]:
    """A copy of ``config`` with the command-line overrides merged in."""
    config = copy.deepcopy(config)
    zero = config.setdefault("zero_optimization", {})
    if overrides.zero_stage is not None:
        zero["stage"] = overrides.zero_stage
    if overrides.precision is not None:
        config["fp16"] = {**config.get("fp16", {}), "enabled": overrides.precision == "fp16"}
        config["bf16"] = {**config.get("bf16", {}), "enabled": overrides.precision == "bf16"}
        if overrides.precision == "fp16":
            config["fp16"].setdefault("loss_scale", 0)  # dynamic loss scaling
    if overrides.grad_accum is not None:
        config["gradient_accumulation_steps"] = overrides.grad_accum
    if overrides.grad_clip is not None:
        config["gradient_clipping"] = overrides.grad_clip
    if overrides.offload is not None:
        for name in ("optimizer", "param"):
            zero.pop(f"offload_{name}", None)
        if overrides.offload in ("optimizer", "optimizer+params"):
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
        if overrides.offload == "optimizer+params":
            zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    params = config.setdefault("optimizer", {"type": "AdamW", "params": {}}).setdefault("params", {})
    if overrides.lr is not None:
        params["lr"] = overrides.lr
    if overrides.weight_decay is not None:
        params["weight_decay"] = overrides.weight_decay
    if overrides.optimizer is not None:
        kind, adam_w_mode = OPTIMIZERS[overrides.optimizer]
        config["optimizer"]["type"] = kind
        params["adam_w_mode"] = adam_w_mode
    return config


def finalize_for_device(config: dict[str, Any], device_type: str) -> dict[str, Any]:
    """Refuse what the device cannot do; pick the optimizer implementation that runs there."""
    precision, stage = precision_of(config), zero_stage_of(config)
    if config.get("fp16", {}).get("enabled") and config.get("bf16", {}).get("enabled"):
        raise GnnZeroError("the ds_config enables both fp16 and bf16; enable one (or pass "
                           "--precision fp32|bf16|fp16)")
    if precision == "fp16" and device_type == "cpu":
        raise GnnZeroError("fp16 needs a CUDA GPU and this run is on CPU; use bf16 "
                           "(e.g. ds_configs/zero2_bf16.json or --precision bf16) or fp32")
    offload = offload_of(config)
    if offload != "none" and stage == 0:
        raise GnnZeroError("optimizer/parameter offload needs ZeRO stage >= 1 (offload_param "
                           "needs stage 3); raise zero_optimization.stage or drop the offload")
    if "param" in offload and stage != 3:
        raise GnnZeroError("offload_param needs ZeRO stage 3; use ds_configs/zero3_offload.json "
                           "or offload only the optimizer")
    optimizer = config.get("optimizer", {})
    if optimizer.get("type", "").lower() in ("adam", "adamw") and device_type == "cpu" \
            and offload == "none":
        # DeepSpeed's FusedAdam is a CUDA kernel; on CPU without offload use torch's AdamW,
        # in its fused CPU kernel (one pass per tensor: 0.37 against 1.0 ms a step for the
        # benchmark's GraphSAGE, 0.28 against 0.57 ms on ZeRO's flat partition) unless the
        # config asks for torch's foreach implementation.
        params = optimizer.setdefault("params", {})
        params["torch_adam"] = True
        if not params.get("foreach"):
            params.setdefault("fused", True)
    zero = config.get("zero_optimization", {})
    if device_type == "cpu" and offload == "none" and stage >= 1:
        # A contiguous gradient buffer keeps a GPU's caching allocator from fragmenting; on a
        # CPU it is one more copy of every gradient inside its backward hook (0.5-0.9 ms of a
        # 40-50 ms GraphSAGE step).  DeepSpeed's default, true, stays on GPUs and with offload.
        zero.setdefault("contiguous_gradients", False)
    return config
