"""The training loop: rank-sharded mini-batches through an engine, epochs, validation,
early stopping and checkpoints.

:class:`Trainer` drives a DeepSpeed engine (or the baseline's :class:`PlainEngine`);
it knows nothing of how the batches were sampled, which task they serve (the ``task``
object turns a batch into a loss and runs validation: :mod:`gnnzero.tasks`) or how the
run was configured beyond its own sections (:mod:`gnnzero.engine.options`).  Everything it changes
lives in one :class:`RunState`, which every checkpoint saves whole.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from ..observe.memory import peak_memory
from ..observe.steps import StepStats
from ..observe.steps import PhaseClock
from ..observe.turns import turn_taking
from ..utils.dist import all_reduce, all_reduce_tensor
from . import checkpoint as ckpt
from . import loss_scale
from .batches import prepare_batch
from .guards import check_finite_gradients
from .prefetch import batch_stream, spare_cpu
from .options import CheckpointConfig, EvalConfig, TrainConfig
from .selection import patience_exhausted
from .state import RunState


FROM_FINAL = "validated_by_final_evaluation"


def fill_from_final(epoch_log: list[dict], task, final: dict) -> None:
    """Give the last epoch the validation figures of the final evaluation when its own
    validation was skipped for it (:attr:`Trainer.final_method`)."""
    if epoch_log and epoch_log[-1].pop(FROM_FINAL, False):
        epoch_log[-1].update(task.epoch_figures(final))


@dataclass
class Trainer:
    """Everything the loop needs; :meth:`fit` trains and returns the totals."""

    engine: Any
    task: Any                  # gnnzero.tasks: loss, validate, metric
    loader: Any
    dataset: Any
    device: torch.device
    dtype: torch.dtype
    train: TrainConfig
    evaluation: EvalConfig
    checkpoint: CheckpointConfig
    eval_method: str           # per-epoch validation: full-graph | clusters | layerwise | sampled
    meta: dict                 # what a checkpoint must match to be resumed (checkpoint.py)
    probe: Any                 # observe.probe.MemoryProbe
    monitor: Any               # observe.monitor.TrainingMonitor
    state: RunState
    show: bool = False
    writes_checkpoints: bool = True
    prefetch_batches: int = 0  # batches prepared ahead in a background thread (0: inline)
    # The final evaluation's method: a last epoch validated the same way is not evaluated
    # twice; its figures come from the final evaluation (run.finalize).
    final_method: Optional[str] = None

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.train.output_dir, "checkpoints")

    # ------------------------------------------------------------------ checkpoints

    def resume(self) -> None:
        """Restore the newest complete checkpoint as ``--resume`` asks (on: one must exist)."""
        mode = self.checkpoint.resume
        if mode == "off":
            return
        client = ckpt.load(self.engine, self.checkpoint_dir, self.meta)
        if client is None:
            if mode == "on":
                raise ckpt.missing_checkpoint(self.checkpoint_dir)
            if self.show:
                print(f"--resume auto: no checkpoint in {self.checkpoint_dir}, starting fresh",
                      flush=True)
            return
        self.state = RunState.from_dict(client["run_state"])
        loss_scale.restore_scaler_state(self.engine, client.get("loss_scaler"))
        self.state.last_checkpoint = client["checkpoint_path"]
        if self.show:
            print(f"resumed from step {self.engine.global_steps} (epoch {self.state.epoch}, "
                  f"batch {self.state.batch_in_epoch})", flush=True)

    def _save(self) -> None:
        # ckpt.save adds every rank's RNG state; ckpt.load restores this rank's.
        self.state.last_saved_step = self.engine.global_steps
        self.state.last_checkpoint = ckpt.save(
            self.engine, self.checkpoint_dir, self.engine.global_steps,
            {"run_state": self.state.as_dict(), "loss_scaler": loss_scale.scaler_state(self.engine)},
            self.meta, self.checkpoint.keep_checkpoints)

    def _saves(self) -> bool:
        return self.writes_checkpoints and not self.checkpoint.no_checkpoint

    # ------------------------------------------------------------------------ steps

    def _batches(self, epoch: int, start: int):
        """This epoch's batches on the device, prepared ahead when the loader allows it."""
        depth = (self.prefetch_batches if getattr(self.loader, "prefetch_safe", False)
                 and spare_cpu(self.device) else 0)
        prepare = functools.partial(prepare_batch, device=self.device, dtype=self.dtype,
                                    non_blocking=depth > 0)
        return batch_stream(self.loader.epoch(epoch, start=start), prepare, depth, self.device)

    def _step(self, batch, epoch: int, clock: PhaseClock) -> Tensor:
        """One micro-step on a prepared ``batch``; returns its loss, detached, on the device.

        No host sync and no collective between accumulation boundaries: the loss stays a
        tensor, and its finiteness is checked with the gradients', in one all-reduce
        before ``engine.step()`` (guards.py).
        """
        engine = self.engine
        self.probe.begin_step(batch)
        self.monitor.start_forward(engine.global_steps + 1)
        clock.lap()
        with self.probe.forward():
            loss = self.task.loss(engine, batch)
        clock.lap()
        engine.backward(loss)
        loss = loss.detach()
        self._unchecked_loss = loss if self._unchecked_loss is None else self._unchecked_loss + loss
        clock.lap()
        self.probe.after_backward()  # model states counted on the first 3 steps only
        if engine.is_gradient_accumulation_boundary():  # all ranks: a collective
            check_finite_gradients(engine, engine.global_steps + 1, epoch,
                                   self.state.last_checkpoint, loss=self._unchecked_loss)
            self._unchecked_loss = None
            self.monitor.record_gradients(engine, engine.global_steps + 1)
        steps_before = engine.global_steps
        loss_scale.step(engine)
        self.probe.after_step()
        if engine.global_steps != steps_before:
            self.monitor.record_global_norm(engine, engine.global_steps)
        clock.lap()
        return loss

    def _flush_losses(self) -> None:
        """Append the steps' mean losses over ranks to the loss curve: one all-reduce for all
        the steps since the last flush (every rank flushes at the same steps)."""
        if not self._pending_losses:
            return
        steps, losses = zip(*self._pending_losses)
        means = all_reduce_tensor(torch.stack(losses).double()).tolist()
        world = self.engine.world_size
        self.state.loss_curve.extend((step, mean / world) for step, mean in zip(steps, means))
        self._pending_losses = []

    def train_epoch(self, epoch: int, start: int) -> tuple[StepStats, bool]:
        """One epoch from batch ``start``; returns its statistics and whether max_steps hit."""
        engine, stats, step_losses = self.engine, StepStats(), []
        clock = PhaseClock(self.device)
        self._unchecked_loss, self._pending_losses = None, []
        engine.train()
        bar = tqdm(total=len(self.loader), initial=start, desc=f"epoch {epoch}",
                   disable=not self.show, leave=False, dynamic_ncols=True)
        batches = self._batches(epoch, start)
        stopped, shown = False, 0.0
        try:
            for index in range(start, len(self.loader)):
                clock.start()
                batch = next(batches)
                steps_before = engine.global_steps
                loss = self._step(batch, epoch, clock)
                stats.add_step(batch, loss, {})
                step_losses.append(loss)
                bar.update(1)
                if self.show and time.monotonic() - shown > 1.0:  # rank 0's bar: a sync a second
                    bar.set_postfix(loss=f"{float(loss):.4f}")
                    shown = time.monotonic()
                if engine.global_steps == steps_before:
                    continue  # still accumulating gradients
                self._pending_losses.append((engine.global_steps, torch.stack(step_losses).mean()))
                step_losses = []
                self.state.epoch, self.state.batch_in_epoch = epoch, index + 1
                every = self.checkpoint.checkpoint_every
                if every and self._saves() and engine.global_steps % every == 0:
                    self._flush_losses()
                    self._save()
                if self.train.max_steps and engine.global_steps >= self.train.max_steps:
                    stopped = True
                    break
        finally:
            batches.close()
            bar.close()
        self._flush_losses()
        clock.drain(stats)
        stats.settle()
        return stats, stopped

    # ---------------------------------------------------------------------- epochs

    def eval_options(self) -> dict:
        """Evaluation settings beyond the method: clusters, chunk size, scratch folder, cache."""
        return {"partition": getattr(self.loader, "partition", None),
                "batch_size": self.evaluation.eval_batch_nodes,
                "scratch_dir": self.evaluation.eval_scratch_dir or
                os.path.join(self.train.output_dir, "eval-scratch"),
                "cache_dir": self.loader.opts.cache_dir}

    def _report(self, entry: dict, waited: Optional[int]) -> None:
        if not self.show:
            return
        metric = self.task.metric
        val = f"  val {metric} {entry[f'val_{metric}']:.4f}" if f"val_{metric}" in entry else ""
        if FROM_FINAL in entry:
            val = f"  val {metric}: the final evaluation's (same method, not run twice)"
        if "sampled_val" in entry:
            sv = entry["sampled_val"]
            val += f" [{sv['ci_low']:.3f}, {sv['ci_high']:.3f}] ({sv['total']} sampled)"
        print(f"epoch {entry['epoch']:3d}  loss {entry['loss']:.4f}{val}  time "
              f"{entry['seconds']:.2f}s{loss_scale.describe(entry)}", flush=True)
        if waited is not None:
            print(f"early stop after epoch {entry['epoch']}: no better validation {metric} for "
                  f"{waited} epochs (--patience {self.train.patience})", flush=True)

    def fit(self) -> tuple[StepStats, float]:
        """Train from ``state`` to the last epoch (or a stop); returns totals and seconds."""
        totals, train_seconds = StepStats(), 0.0
        epoch, start = self.state.epoch, self.state.batch_in_epoch
        if start >= len(self.loader):
            epoch, start = epoch + 1, 0
        log = self.state.epoch_log
        turns = turn_taking(self.train.take_turns)   # benchmarks: epochs in turn with a partner
        if epoch < self.train.epochs and log and log[-1].pop(FROM_FINAL, False):
            # resumed to train on past a last epoch left to the final evaluation: its
            # weights are the restored ones, so validate it now
            self.task.validate(self, log[-1]["epoch"], log[-1])
        for epoch in range(epoch, self.train.epochs):
            if turns:
                turns.wait()
            t0 = time.perf_counter()
            stats, stopped = self.train_epoch(epoch, start)
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            start = 0
            totals.add(stats)
            loss_sum, batches = all_reduce([stats.loss_sum, stats.counts["batches"]])
            entry = {"epoch": epoch, "loss": loss_sum / max(batches, 1), "seconds": seconds,
                     "peak_memory_bytes": all_reduce([peak_memory(self.device)["peak_bytes"]],
                                                     "max")[0],
                     **loss_scale.epoch_entry(self.engine, self.state)}
            last = epoch == self.train.epochs - 1
            if last and not stopped and self.eval_method == self.final_method:
                entry[FROM_FINAL] = True       # the final evaluation computes the same figures
            elif (epoch + 1) % self.evaluation.eval_every == 0 or last or stopped:
                self.task.validate(self, epoch, entry)
            self.state.epoch_log.append(entry)
            waited = patience_exhausted(self.state.epoch_log, self.train.patience,
                                        self.task.metric)
            self._report(entry, waited)
            if not stopped:  # a --max-steps stop keeps its place inside the epoch for --resume
                self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
            # DeepSpeed does not checkpoint half-accumulated gradients: save at boundaries only.
            engine = self.engine
            at_boundary = engine.micro_steps % engine.gradient_accumulation_steps() == 0
            saved_now = self.state.last_saved_step == engine.global_steps
            if self._saves() and (stopped or not self.checkpoint.checkpoint_every) \
                    and at_boundary and not saved_now:  # a --max-steps stop always saves
                self._save()
            if turns:
                turns.done()
            if stopped or waited is not None:
                self.state.early_stopped_epoch = epoch if waited is not None else None
                break
        if turns:
            turns.finish()
        return totals, train_seconds
