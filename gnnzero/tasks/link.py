"""Link prediction: binary cross-entropy on the batch's positive and sampled pairs; ROC-AUC,
average precision, Hits@K, MRR and precision / recall by hop distance."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.distances import bucket_of, distances_and_matches
from ..data.link_split import test_graph
from ..engine.evaluation import final_eval_method, per_epoch_rule
from ..engine.link_evaluation import endpoint_embeddings, score_pairs
from ..models import forward_batch
from ..models.link import encoder_of
from .link_metrics import (auc_interval, youden_threshold, bucket_table, mrr, ranking_metrics,
                           roc_auc, score_histogram)
from .options import TaskConfig

MRR_MAX_POSITIVES = 10_000   # positives ranked for the MRR (a seeded sample beyond this)
# Test edges placed in distance buckets (a seeded sample beyond this): each costs a BFS of
# depth 4 from its source, whose ball can be most of a dense graph.
DISTANCE_MAX_POSITIVES = 10_000


def sample_columns(pairs: Tensor, limit: int, seed: int) -> Tensor:
    """At most ``limit`` columns of ``pairs`` ``[2, P]`` (a seeded sample, in order)."""
    if pairs.size(1) <= limit:
        return pairs
    rng = np.random.default_rng([seed, pairs.size(1), limit])
    return pairs[:, torch.from_numpy(np.sort(rng.choice(pairs.size(1), limit, replace=False)))]


def hidden_pairs(split) -> set[tuple[int, int]]:
    """The validation and test edges, as ``(u, v)`` tuples (both are non-edges of training)."""
    edges = torch.cat([split.val.pos, split.test.pos], dim=1).t().tolist()
    return {(u, v) for u, v in edges}


class LinkTask:
    """Edges of the graph, hidden by a seeded split; selection by validation ROC-AUC."""

    name = "link"
    metric = "auc"
    per_epoch_rule = staticmethod(per_epoch_rule)   # (method, the line stating it)

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def loss(self, engine, batch) -> Tensor:
        """Mean binary cross-entropy (fp32) over the batch's pairs; a batch without pairs
        gives a zero loss that still reaches every parameter (same collectives on all ranks)."""
        scores = forward_batch(engine, batch, pairs=batch.edge_label_index).float()
        if not batch.edge_label.numel():
            return scores.sum() * 0.0
        return F.binary_cross_entropy_with_logits(scores, batch.edge_label.float())

    # ------------------------------------------------------------------ evaluation

    def _scores(self, trainer, method: str, pairs: dict[str, Tensor], graph=None,
                show: bool = False) -> dict[str, np.ndarray]:
        """Scores of each named ``[2, P]`` pair set, from one embedding pass over their
        endpoints in ``graph`` (the training graph by default)."""
        nodes = torch.unique(torch.cat(list(pairs.values()), dim=1))
        rows = endpoint_embeddings(method, trainer.engine, graph or trainer.dataset, nodes,
                                   trainer.device, trainer.dtype, **trainer.eval_options(),
                                   show=show)
        return {name: score_pairs(trainer.engine, rows, p, trainer.device, trainer.dtype)
                for name, p in pairs.items()}

    def validate(self, trainer, epoch: int, entry: dict) -> None:
        """This epoch's validation (and test) ROC-AUC into ``entry``."""
        split = trainer.dataset.link_split
        if trainer.eval_method == "sampled":
            entry["sampled_val"] = self._sampled(trainer, split.val, epoch)
            entry["val_auc"] = entry["sampled_val"]["auc"]
            return
        val = self._scores(trainer, trainer.eval_method, {"pos": split.val.pos,
                                                          "neg": split.val.neg})
        test = self._scores(trainer, trainer.eval_method, {"pos": split.test.pos,
                                                           "neg": split.test.neg},
                            test_graph(trainer.dataset))
        entry["val_auc"] = roc_auc(val["pos"], val["neg"])
        entry["test_auc"] = roc_auc(test["pos"], test["neg"])

    def _sampled(self, trainer, edges, epoch: int, confidence: float = 0.95) -> dict:
        """ROC-AUC of ``--sampled-eval-nodes`` random validation edges and as many of its
        non-edges, each scored exactly, with a Hanley-McNeil interval."""
        budget = trainer.evaluation.sampled_eval_nodes
        generator = torch.Generator().manual_seed(trainer.train.seed * 1_000_003 + epoch)
        pos = edges.pos[:, torch.randperm(edges.pos.size(1), generator=generator)[:budget]]
        neg = edges.neg[:, torch.randperm(edges.neg.size(1), generator=generator)[:budget]]
        s = self._scores(trainer, "sampled", {"pos": pos, "neg": neg})
        auc = roc_auc(s["pos"], s["neg"])
        low, high = auc_interval(auc, pos.size(1), neg.size(1))
        return {"split": "val", "auc": auc, "ci_low": low, "ci_high": high,
                "confidence": confidence, "total": int(pos.size(1) + neg.size(1)),
                "population": int(edges.pos.size(1))}

    def _mrr_pairs(self, pos: Tensor, seed: int, num_nodes: int) -> tuple[Tensor, Tensor]:
        """Up to :data:`MRR_MAX_POSITIVES` positives and, per positive ``(u, v)``, the pairs
        ``(u, w)`` with ``--mrr-negatives`` random ``w`` (OGB-citation2 style lists)."""
        pos = sample_columns(pos, MRR_MAX_POSITIVES, seed)
        rng = np.random.default_rng([seed, pos.size(1)])
        m = self.cfg.mrr_negatives
        others = torch.from_numpy(rng.integers(num_nodes, size=(pos.size(1), m)))
        return pos, torch.stack([pos[0].repeat_interleave(m), others.reshape(-1)])

    def final_method(self, engine, dataset) -> tuple[str, Any]:
        """The final evaluation's method (layer-wise where the encoder allows it) and why not."""
        return final_eval_method(encoder_of(engine), dataset.num_nodes)

    def epoch_figures(self, final: dict) -> dict[str, float]:
        """An epoch-log entry's validation figures, read off a final evaluation."""
        return {"val_auc": final["val"]["auc"], "test_auc": final["test"]["auc"]}

    def final_evaluation(self, trainer, show: bool) -> dict[str, Any]:
        """Every metric of the validation and test edges, exactly, layer-wise where the
        encoder allows it (validation over the training graph, test over training +
        validation edges); the per-distance table of the test edges (distances in the
        training graph) at the threshold that maximises Youden's J on validation."""
        dataset, seed = trainer.dataset, trainer.train.seed
        split = dataset.link_split
        method, reason = self.final_method(trainer.engine, dataset)
        if reason and show:
            print(f"final evaluation: {method} (layer-wise is not possible: {reason})",
                  flush=True)
        placed = sample_columns(split.test.pos, DISTANCE_MAX_POSITIVES, seed)
        distances, matched, matched_distances = distances_and_matches(
            dataset.topology, placed.numpy(), hidden_pairs(split), seed)
        pairs = {name: {"pos": edges.pos, "neg": edges.neg}
                 for name, edges in (("val", split.val), ("test", split.test))}
        pairs["test"]["placed"] = placed
        pairs["test"]["matched"] = torch.from_numpy(matched)
        for name, edges in (("val", split.val), ("test", split.test)):
            pairs[name]["mrr_pos"], pairs[name]["mrr_neg"] = self._mrr_pairs(
                edges.pos, seed, dataset.num_nodes)
        s = {f"{name}_{key}": scores for name, graph in (("val", dataset),
                                                         ("test", test_graph(dataset)))
             for key, scores in self._scores(trainer, method, pairs[name], graph,
                                             show=show).items()}
        threshold = youden_threshold(s["val_pos"], s["val_neg"])
        result: dict[str, Any] = {}
        for name in ("val", "test"):
            pos, neg = s[f"{name}_pos"], s[f"{name}_neg"]
            called = int((pos >= threshold).sum()) + int((neg >= threshold).sum())
            result[name] = {
                **ranking_metrics(pos, neg, self.cfg.hits_at),
                "mrr": mrr(s[f"{name}_mrr_pos"],
                           s[f"{name}_mrr_neg"].reshape(-1, self.cfg.mrr_negatives)),
                "mrr_positives": int(s[f"{name}_mrr_pos"].size),
                "recall": float((pos >= threshold).mean()),
                "precision": float((pos >= threshold).sum() / called) if called else None,
                "method": method}
        result["threshold"] = threshold
        result["buckets"] = bucket_table(s["test_placed"], bucket_of(distances), s["test_matched"],
                                         bucket_of(matched_distances), threshold,
                                         self.cfg.min_bucket)
        result["histogram"] = score_histogram(s["test_pos"], s["test_neg"])
        result["split"] = split.summary()
        return result

    def headline_metrics(self, final: dict) -> dict[str, Any]:
        """The final model's figures at the top of ``metrics.json``."""
        return {"test_auc": final["test"]["auc"], "val_auc": final["val"]["auc"],
                "test_average_precision": final["test"]["average_precision"],
                "test_mrr": final["test"]["mrr"]}
