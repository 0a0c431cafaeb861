"""The run's ``metrics.json``, assembled in one place for the trainer and the baseline."""
from __future__ import annotations

from typing import Any, Optional

from ..engine.selection import best_validation_epoch
from ..engine.state import RunState
from .steps import StepStats


def test_figure(metrics: dict[str, Any]) -> tuple[str, float]:
    """The final model's test figure of a run's task: ``("accuracy", x)`` or ``("auc", x)``."""
    metric = (metrics.get("headline") or {}).get("metric", "accuracy")
    return metric, metrics[f"test_{metric}"]


def training_rate(metrics: dict[str, Any]) -> float:
    """Training items per second: nodes whose loss counts, or scored pairs (link runs)."""
    key = "train_pairs_per_s" if metrics.get("task") == "link" else "train_nodes_per_s"
    return metrics["throughput"][key]


def dataset_summary(dataset) -> dict[str, Any]:
    if getattr(dataset, "is_hetero", False):
        return dataset.summary()
    return {"name": dataset.name, "num_nodes": dataset.num_nodes,
            "num_edges": dataset.num_edges, "num_features": dataset.num_features,
            "num_classes": dataset.num_classes,
            **({"link_split": dataset.link_split.summary()} if dataset.link_split else {}),
            "feature_store": type(dataset.features).__name__,
            "feature_store_bytes": dataset.features.nbytes()}


def headline_metric(best_val: Optional[dict], final_test: float,
                    metric: str = "accuracy") -> dict[str, Any]:
    """Which test figure (the task's ``metric``) a run reports first: the one at the
    best-validation epoch (model selection as in PyG's examples and the GCN paper) when
    per-epoch validation measured the test split too, else the final model's."""
    key = f"test_{metric}"
    if best_val is not None:
        return {"source": "best-validation epoch", "epoch": best_val["epoch"], "metric": metric,
                key: best_val[key]}
    return {"source": "last epoch", "epoch": None, "metric": metric, key: final_test}


def assemble_metrics(*, engine_kind: str, task, final: dict, state: RunState, totals: StepStats,
                     summed_counts: dict[str, float], train_seconds: float,
                     load_seconds: float, per_rank: list[dict], formula: Optional[dict],
                     zero_stage: Optional[int], precision: str, offload: str, world_size: int,
                     num_parameters: int, optimizer_steps: int, skipped_steps: int,
                     loss_scale: Optional[float],
                     dataset, loader_kind: str, steps_per_epoch: int, config: dict,
                     ds_config: Optional[dict], environment: dict,
                     monitor: Optional[dict]) -> dict[str, Any]:
    """Every figure of a finished run: the task's metrics, time, throughput, memory, curves,
    config.  ``task`` (:mod:`gnnzero.tasks`) names the headline figures and the metric
    validation selects on."""
    epochs_run = max(1, len(state.epoch_log))
    memory = {"kind": per_rank[0]["kind"], "per_rank": per_rank}
    if formula is not None:
        memory["zero_formula_model_state_bytes"] = formula
    headline = task.headline_metrics(final)
    best_val = best_validation_epoch(state.epoch_log, task.metric)
    return {
        "engine": engine_kind, "task": task.name, **headline, "evaluation": final,
        "epoch_time_s": train_seconds / epochs_run, "train_seconds": train_seconds,
        "load_seconds": load_seconds,
        "throughput": totals.throughput(summed_counts, train_seconds),
        "memory": memory, "zero_stage": zero_stage, "precision": precision, "offload": offload,
        "world_size": world_size, "num_parameters": num_parameters,
        "optimizer_steps": optimizer_steps, "skipped_steps": skipped_steps,
        "loss_scale": loss_scale,
        "loss_curve": state.loss_curve, "epochs": state.epoch_log,
        "best_val": best_val,
        "headline": headline_metric(best_val, headline[f"test_{task.metric}"], task.metric),
        "early_stopped_epoch": state.early_stopped_epoch,
        "dataset": dataset_summary(dataset),
        "loader": {"kind": loader_kind, "steps_per_epoch": steps_per_epoch},
        "config": config, "ds_config": ds_config, "environment": environment,
        "monitor": monitor,
    }
