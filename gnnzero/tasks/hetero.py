"""Node classification on a heterogeneous graph's target node type."""
from __future__ import annotations

from typing import Any, Optional

from ..engine.evaluation import auto_eval_method, per_epoch_rule
from ..engine.hetero_evaluation import LARGE_GRAPH_METHOD, evaluate_hetero, evaluate_hetero_sampled
from .node import NodeTask


class HeteroNodeTask(NodeTask):
    """:class:`NodeTask` (loss, metrics, selection by accuracy) over ``HeteroData`` batches,
    evaluated on the whole graph or on full neighbourhoods (exact), or sampled."""

    @staticmethod
    def per_epoch_rule(model, dataset, evaluation) -> tuple[str, str]:
        return per_epoch_rule(model, dataset, evaluation, above=LARGE_GRAPH_METHOD,
                              covers=f"every labelled {dataset.target} node "
                                     f"(heterogeneous graph)")

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
        return auto_eval_method(engine, dataset.num_nodes, above=LARGE_GRAPH_METHOD)[0], None

    def final_evaluation(self, trainer, show: bool) -> dict[str, Any]:
        method = self.final_method(trainer.engine, trainer.dataset)[0]
        return evaluate_hetero(method, trainer.engine, trainer.dataset, trainer.device,
                               trainer.dtype, trainer.evaluation.eval_batch_nodes, roc_auc=True)
