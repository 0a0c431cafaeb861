"""fp16 loss scaling as the run sees it: skipped steps and the scale in the log, and the
scaler's state saved in and restored from every checkpoint.

DeepSpeed keeps the dynamic loss scale in one of two places, by optimizer:

* ZeRO-1/2/3 (``DeepSpeedZeroOptimizer*``): ``optimizer.loss_scaler``, a
  ``DynamicLossScaler`` (or a static ``LossScaler``); it pickles the object whole
  into the optimizer states;
* ZeRO-0 (``FP16_Optimizer`` / ``FP16_UnfusedOptimizer``):
  ``optimizer.loss_scale_config``, a ``LossScaleConfig``; its ``state_dict`` keeps
  the scale, iteration and last overflow, but not the hysteresis left.

A run resumed without the optimizer states (a universal checkpoint, a changed ZeRO
stage) restarts at the initial scale of 2**16 and overflows again for many steps.
Saving the fields ourselves, beside the run state, restores the same scaler
whatever DeepSpeed restored.  Under bf16/fp32 there is no scaler and all of this is
a no-op.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import GnnZeroError

# The scaler fields that change while training (the rest come from the ds_config).
STATE_FIELDS = ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")


def fp16(engine) -> bool:
    enabled = getattr(engine, "fp16_enabled", None)
    return bool(enabled()) if callable(enabled) else False


def scaler_of(engine) -> Optional[Any]:
    """The object holding the loss scale (see the module docstring); ``None`` without fp16."""
    if not fp16(engine):
        return None
    optimizer = getattr(engine, "optimizer", None)
    for name in ("loss_scale_config", "loss_scaler"):
        holder = getattr(optimizer, name, None)
        if holder is not None and hasattr(holder, "cur_scale"):
            return holder
    return None


def scaler_state(engine) -> Optional[dict[str, Any]]:
    """The scaler's changing fields, for a checkpoint's client state; ``None`` without fp16."""
    scaler = scaler_of(engine)
    if scaler is None:
        return None
    return {name: getattr(scaler, name) for name in STATE_FIELDS if hasattr(scaler, name)}


def restore_scaler_state(engine, state: Optional[dict[str, Any]]) -> None:
    """Put a saved :func:`scaler_state` back into the engine's scaler."""
    scaler = scaler_of(engine)
    if scaler is None or not state:
        return
    for name, value in state.items():
        if name in STATE_FIELDS and hasattr(scaler, name):
            setattr(scaler, name, value)


def current_scale(engine) -> Optional[float]:
    scaler = scaler_of(engine)
    return None if scaler is None else float(scaler.cur_scale)


def step(engine) -> None:
    """``engine.step()``; DeepSpeed's bare exception when fp16 overflows at the minimum loss
    scale (every step skipped: the gradients are NaN/inf whatever the scale) becomes one line."""
    try:
        engine.step()
    except Exception as exc:  # DeepSpeed raises a plain Exception here
        if "loss scale already at minimum" not in str(exc):
            raise
        raise GnnZeroError(
            f"fp16 gradients overflow even at the minimum loss scale (step "
            f"{engine.global_steps + 1}, {engine.skipped_steps} steps skipped so far): they are "
            f"NaN/inf, not just large; lower --lr, set --grad-clip, use --precision bf16, or "
            f"check the features for extreme values") from exc


def epoch_entry(engine, state) -> dict[str, Any]:
    """For the epoch log: steps skipped this epoch (fp16 overflow) and the scale now."""
    if not fp16(engine):
        return {}
    skipped = int(engine.skipped_steps)
    before = next((e["skipped_steps_total"] for e in reversed(state.epoch_log)
                   if "skipped_steps_total" in e), 0)
    return {"skipped_steps": skipped - before, "skipped_steps_total": skipped,
            "loss_scale": current_scale(engine)}


def describe(entry: dict[str, Any]) -> str:
    """`` skipped 3 (fp16 overflow), loss scale 4096`` for an epoch entry; '' without fp16."""
    if "loss_scale" not in entry:
        return ""
    return f"  skipped {entry['skipped_steps']} (fp16 overflow), loss scale {entry['loss_scale']:g}"
