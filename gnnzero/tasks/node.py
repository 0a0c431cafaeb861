"""Node classification: the cross-entropy of the batch's training nodes, accuracy metrics."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..engine.batches import node_loss
from ..engine.evaluation import (evaluate, evaluate_sampled, final_eval_method,
                                  per_epoch_rule)
from ..models import forward_batch


class NodeTask:
    """Labels of nodes; validation and model selection by accuracy."""

    name = "node"
    metric = "accuracy"
    per_epoch_rule = staticmethod(per_epoch_rule)   # (method, the line stating it)

    def loss(self, engine, batch) -> Tensor:
        return node_loss(forward_batch(engine, batch), batch)

    def validate(self, trainer, epoch: int, entry: dict) -> None:
        """This epoch's validation (and test) accuracy into ``entry``."""
        if trainer.eval_method == "sampled":
            sampled = evaluate_sampled(trainer.engine, trainer.dataset,
                                       trainer.evaluation.sampled_eval_nodes, trainer.device,
                                       trainer.dtype, seed=trainer.train.seed, epoch=epoch)
            entry["sampled_val"] = sampled
            entry["val_accuracy"] = sampled["accuracy"]
            return
        split = evaluate(trainer.eval_method, trainer.engine, trainer.dataset, trainer.device,
                         trainer.dtype, **trainer.eval_options())
        entry["val_accuracy"] = split["val"]["accuracy"]
        entry["test_accuracy"] = split["test"]["accuracy"]

    def final_method(self, engine, dataset) -> tuple[str, Any]:
        """The final evaluation's method (layer-wise where the model allows it) and why not."""
        return final_eval_method(engine, dataset.num_nodes)

    def epoch_figures(self, final: dict) -> dict[str, float]:
        """An epoch-log entry's validation figures, read off a final evaluation."""
        return {"val_accuracy": final["val"]["accuracy"],
                "test_accuracy": final["test"]["accuracy"]}

    def final_evaluation(self, trainer, show: bool) -> dict[str, Any]:
        """Exact metrics of every split, layer-wise where the model allows it."""
        method, reason = self.final_method(trainer.engine, trainer.dataset)
        if reason and show:
            print(f"final evaluation: {method} (layer-wise is not possible: {reason})",
                  flush=True)
        return evaluate(method, trainer.engine, trainer.dataset, trainer.device, trainer.dtype,
                        **trainer.eval_options(), show=show, roc_auc=True)

    def headline_metrics(self, final: dict) -> dict[str, Any]:
        """The final model's figures at the top of ``metrics.json``."""
        return {"test_accuracy": final["test"]["accuracy"],
                "val_accuracy": final["val"]["accuracy"],
                "train_accuracy": final["train"]["accuracy"]}
