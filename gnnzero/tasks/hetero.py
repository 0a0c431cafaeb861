"""Node classification on a heterogeneous graph's target node type."""
from __future__ import annotations

from typing import Any, Optional

from ..engine.hetero_evaluation import evaluate_hetero, evaluate_hetero_sampled, hetero_eval_method
from .node import NodeTask


class HeteroNodeTask(NodeTask):
    """:class:`NodeTask` (loss, metrics, selection by accuracy) over ``HeteroData`` batches,
    evaluated on the whole graph or on full neighbourhoods (exact), or sampled."""

    @staticmethod
    def per_epoch_rule(model, dataset, evaluation) -> tuple[str, str]:
        method, why = evaluation.eval_method, "asked for"
        if method == "auto":
            method, why = hetero_eval_method(dataset.num_nodes, evaluation.sampled_eval_nodes)
        return method, (f"per-epoch validation: {method} ({why}; heterogeneous graph, "
                        f"--eval-method {evaluation.eval_method}: the whole graph up to the "
                        f"same node count, above it each target node from its full "
                        f"neighbourhood); the final evaluation covers every labelled "
                        f"{dataset.target} node")

    def validate(self, trainer, epoch: int, entry: dict) -> None:
        if trainer.eval_method == "sampled":
            sampled = evaluate_hetero_sampled(
                trainer.engine, trainer.dataset, trainer.evaluation.sampled_eval_nodes,
                trainer.device, trainer.dtype, seed=trainer.train.seed, epoch=epoch,
                batch_size=trainer.evaluation.eval_batch_nodes)
            entry["sampled_val"] = sampled
            entry["val_accuracy"] = sampled["accuracy"]
            return
        split = evaluate_hetero(trainer.eval_method, trainer.engine, trainer.dataset,
                                trainer.device, trainer.dtype,
                                trainer.evaluation.eval_batch_nodes)
        entry["val_accuracy"] = split["val"]["accuracy"]
        entry["test_accuracy"] = split["test"]["accuracy"]

    def final_method(self, engine, dataset) -> tuple[str, Optional[str]]:
        return hetero_eval_method(dataset.num_nodes)[0], None

    def final_evaluation(self, trainer, show: bool) -> dict[str, Any]:
        method = self.final_method(trainer.engine, trainer.dataset)[0]
        return evaluate_hetero(method, trainer.engine, trainer.dataset, trainer.device,
                               trainer.dtype, trainer.evaluation.eval_batch_nodes, roc_auc=True)
