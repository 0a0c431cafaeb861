"""Tasks: from a mini-batch to the loss, and from the trained model to the task's metrics.

The trainer and the run call a task's ``loss``, ``validate``, ``final_evaluation`` and
``headline_metrics`` and read its ``metric`` (what validation selects on); nothing else
in the loop depends on which task runs.
"""
from __future__ import annotations

from .options import TASKS, TaskConfig


def build_task(cfg: TaskConfig, dataset=None):
    """The task object of ``cfg.task`` (node classification on a heterogeneous ``dataset``:
    its target node type)."""
    if getattr(dataset, "is_hetero", False):
        from .hetero import HeteroNodeTask

        return HeteroNodeTask()
    if cfg.is_link:
        from .link import LinkTask

        return LinkTask(cfg)
    from .node import NodeTask

    return NodeTask()


__all__ = ["TASKS", "TaskConfig", "build_task"]
