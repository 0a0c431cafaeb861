"""The training-loop, evaluation and checkpoint sections of the config tree."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..utils.settings import check_settings, field_named, refuse, setting

EVAL_METHODS = ("auto", "full-graph", "clusters", "layerwise", "sampled")
RESUME_MODES = ("off", "on", "auto")


@dataclass(kw_only=True)
class TrainConfig:
    """How long to train and where the run's files go."""

    epochs: int = setting(10, "training epochs", low=1)
    seed: int = setting(0, "seed of weights, batches and the synthetic graph", low=0)
    output_dir: str = setting("runs/latest", "metrics.json, config.json, checkpoints/ go here",
                              allowed="a writable folder")
    max_steps: int = setting(0, "stop after this many optimizer steps (0 = no limit)", low=0)
    patience: int = setting(0, "early stopping: end once this many epochs pass without a better "
                               "validation accuracy (ROC-AUC for --task link; 0 = off; >= "
                               "--eval-every)", low=0)
    monitor_every: int = setting(0, "optimizer steps between per-layer gradient/activation "
                                    "records in OUTPUT_DIR/monitor (0 = off)", low=0)
    prefetch_batches: int = setting(2, "batches prepared ahead (sampled, gathered, cast, copied "
                                       "to the device) in a background thread while the step "
                                       "computes; 0 = inline.  Inline also for heterogeneous "
                                       "and --task link batches (PyG's samplers draw from "
                                       "torch's global RNG) and on a CPU whose cores the "
                                       "ranks' compute threads fill",
                                    low=0)
    take_turns: Optional[str] = setting(None, "benchmarks: train epochs in turn with a run "
                                              "started beside this one that names the same "
                                              "file and the other seat (0 trains first), so "
                                              "both meet the machine alike; the wait is not "
                                              "timed (benchmarks/paired.py --interleave)",
                                        allowed="PATH:SEAT", none_means="train alone")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.take_turns is not None:
            from ..observe.turns import parse_turns

            try:
                parse_turns(self.take_turns)
            except ValueError as error:
                raise refuse(field_named(TrainConfig, "take_turns"), self.take_turns,
                             str(error)) from None


@dataclass(kw_only=True)
class EvalConfig:
    """Per-epoch validation; the final evaluation is always over every node."""

    eval_every: int = setting(1, "epochs between validation passes", low=1)
    eval_method: str = setting("auto", "per-epoch validation: auto = sampled with "
                                       "--sampled-eval-nodes, else the whole graph up to 100k "
                                       "nodes, above that exact layer-wise (METIS clusters for "
                                       "models layer-wise cannot run)",
                               choices=EVAL_METHODS)
    sampled_eval_nodes: int = setting(0, "validation nodes drawn per epoch for sampled "
                                         "evaluation, with a 95 % interval (0 = off)", low=0)
    eval_batch_nodes: int = setting(4096, "target nodes per layer-wise evaluation chunk "
                                          "(memory per chunk grows with it)", low=1)
    eval_scratch_dir: Optional[str] = setting(None, "folder for layer-wise evaluation's "
                                                    "shared N x hidden scratch files (on "
                                                    "storage every node sees, for several "
                                                    "nodes)", allowed="a folder",
                                              none_means="OUTPUT_DIR/eval-scratch")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.eval_method == "sampled" and not self.sampled_eval_nodes:
            raise refuse(field_named(EvalConfig, "sampled_eval_nodes"), 0,
                         "--eval-method sampled needs --sampled-eval-nodes N > 0")
        if self.sampled_eval_nodes and self.eval_method not in ("auto", "sampled"):
            raise refuse(field_named(EvalConfig, "sampled_eval_nodes"), self.sampled_eval_nodes,
                         f"applies to --eval-method sampled, not {self.eval_method}; drop one")


@dataclass(kw_only=True)
class CheckpointConfig:
    """When DeepSpeed checkpoints are written and whether the run resumes from one."""

    checkpoint_every: int = setting(0, "optimizer steps between checkpoints (0 = at each "
                                       "epoch end)", low=0)
    keep_checkpoints: int = setting(2, "newest checkpoints kept", low=1)
    no_checkpoint: bool = setting(False, "write no checkpoints")
    resume: str = setting("off", "resume from OUTPUT_DIR/checkpoints: on = there must be one, "
                                 "auto = if there is one", choices=RESUME_MODES, const="on")

    def __post_init__(self) -> None:
        check_settings(self)
