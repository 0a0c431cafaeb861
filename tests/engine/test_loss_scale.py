"""fp16 loss-scaler state: saved, restored, reported, and the minimum-scale failure as one line.

fp16 engines need a GPU, so these run on the CPU against DeepSpeed's own scaler
classes (``DynamicLossScaler``, which ZeRO-1/2/3 use, and ``LossScaleConfig``, which
ZeRO-0's ``FP16_Optimizer`` uses), held where each optimizer holds them.  The
reference is DeepSpeed's ``update_scale`` itself: a scaler restored from the saved
state must go on exactly as the original does.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaleConfig

from gnnzero.engine import loss_scale
from gnnzero.engine.state import RunState
from gnnzero.errors import GnnZeroError
from tests.helpers import world_of_one_process_group

OVERFLOWS = [True, True, False, True, False, False, False, True, False, False, False, False]


@pytest.fixture(scope="module", autouse=True)
def ds_comm():
    """DeepSpeed's scaler asks deepspeed.comm for the rank when it logs an overflow."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    with world_of_one_process_group():
        yield


class Engine(SimpleNamespace):
    """The three engine attributes loss_scale.py reads, around a real DeepSpeed scaler."""

    def fp16_enabled(self) -> bool:
        return self.fp16


def zero_engine(**scaler_args) -> Engine:
    args = {"init_scale": 2.0 ** 16, "scale_window": 3, "min_scale": 1.0, "delayed_shift": 2,
            "consecutive_hysteresis": False, **scaler_args}
    return Engine(fp16=True, optimizer=SimpleNamespace(loss_scaler=DynamicLossScaler(**args)),
                  skipped_steps=0, global_steps=0)


def test_a_restored_dynamic_scaler_continues_exactly_as_the_original():
    original, resumed = zero_engine(), zero_engine()
    for overflow in OVERFLOWS[:7]:
        original.optimizer.loss_scaler.update_scale(overflow)
    saved = loss_scale.scaler_state(original)
    assert saved["cur_scale"] < 2.0 ** 16 and saved["cur_iter"] == 7
    assert set(saved) == {"cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis"}
    loss_scale.restore_scaler_state(resumed, saved)
    for overflow in OVERFLOWS[7:]:
        original.optimizer.loss_scaler.update_scale(overflow)
        resumed.optimizer.loss_scaler.update_scale(overflow)
        assert loss_scale.scaler_state(resumed) == loss_scale.scaler_state(original)


def test_without_the_saved_state_the_scaler_would_restart_from_the_initial_scale():
    # The control: a fresh scaler does not match the trained one, so the test above can fail.
    original, fresh = zero_engine(), zero_engine()
    for overflow in OVERFLOWS:
        original.optimizer.loss_scaler.update_scale(overflow)
        fresh_state = loss_scale.scaler_state(fresh)
    assert fresh_state != loss_scale.scaler_state(original)


def test_zero0_fp16_optimizer_scale_config_round_trips():
    def engine():
        config = LossScaleConfig(torch.float16, True, 1.0, None)
        return Engine(fp16=True, optimizer=SimpleNamespace(loss_scale_config=config),
                      skipped_steps=0, global_steps=0)
    trained, resumed = engine(), engine()
    config = trained.optimizer.loss_scale_config
    config.cur_scale, config.cur_iter, config.last_overflow_iter = 512.0, 40, 37
    loss_scale.restore_scaler_state(resumed, loss_scale.scaler_state(trained))
    restored = resumed.optimizer.loss_scale_config
    assert (restored.cur_scale, restored.cur_iter, restored.last_overflow_iter) == (512.0, 40, 37)
    assert loss_scale.current_scale(resumed) == 512.0


def test_no_scaler_state_without_fp16():
    engine = zero_engine()
    engine.fp16 = False
    assert loss_scale.scaler_state(engine) is None and loss_scale.current_scale(engine) is None
    loss_scale.restore_scaler_state(engine, {"cur_scale": 1.0})  # nothing to restore into
    assert engine.optimizer.loss_scaler.cur_scale == 2.0 ** 16
    assert loss_scale.epoch_entry(engine, RunState()) == {}


def test_epoch_entries_count_the_steps_skipped_in_each_epoch():
    engine, state = zero_engine(), RunState()
    engine.skipped_steps = 3
    first = loss_scale.epoch_entry(engine, state)
    state.epoch_log.append(first)
    engine.skipped_steps = 5
    engine.optimizer.loss_scaler.cur_scale = 4096.0
    second = loss_scale.epoch_entry(engine, state)
    assert (first["skipped_steps"], second["skipped_steps"]) == (3, 2)
    assert second["skipped_steps_total"] == 5 and second["loss_scale"] == 4096.0
    assert loss_scale.describe(second) == "  skipped 2 (fp16 overflow), loss scale 4096"
    assert loss_scale.describe({"loss": 1.0}) == ""


def test_overflow_at_the_minimum_scale_becomes_one_line():
    engine = zero_engine(init_scale=1.0, min_scale=1.0, delayed_shift=1)
    engine.skipped_steps = 9

    def step():  # what DeepSpeed's step does on an overflow
        engine.optimizer.loss_scaler.update_scale(True)
    engine.step = step
    with pytest.raises(GnnZeroError, match="minimum loss scale .* --precision bf16") as error:
        loss_scale.step(engine)
    assert "\n" not in str(error.value) and "9 steps skipped" in str(error.value)


def test_other_step_errors_pass_through():
    engine = zero_engine()

    def step():
        raise RuntimeError("CUDA out of memory")
    engine.step = step
    with pytest.raises(RuntimeError, match="out of memory"):
        loss_scale.step(engine)
