"""Link-prediction metrics from the scores of positive and negative pairs.

ROC-AUC is the Mann-Whitney U statistic (:mod:`gnnzero.utils.stats`).  Average precision, Hits@K
and MRR are written out because scikit-learn is no dependency of the package and
OGB's ``Evaluator`` takes a dataset name; their definitions follow scikit-learn's
``average_precision_score`` and OGB's ``Evaluator._eval_hits`` / ``_eval_mrr``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.distances import BUCKETS
from ..utils.stats import auc_interval, roc_auc  # noqa: F401 (re-exported)


def _ranked(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and the true / false positives at or above each."""
    scores = np.concatenate([pos, neg]).astype(np.float64)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tp = np.cumsum(labels)[last_of_tie]
    return scores[last_of_tie], tp, (last_of_tie + 1) - tp


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds (scikit-learn's AP)."""
    if not len(pos):
        return float("nan")
    _, tp, fp = _ranked(pos, neg)
    precision, recall = tp / (tp + fp), tp / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def hits_at_k(pos: np.ndarray, neg: np.ndarray, k: int) -> float:
    """OGB's Hits@K: the share of positives scoring above the K-th best negative (1 when
    there are fewer than K negatives, as OGB returns)."""
    if len(neg) < k:
        return 1.0
    kth = np.partition(np.asarray(neg, dtype=np.float64), len(neg) - k)[len(neg) - k]
    return float(np.mean(np.asarray(pos, dtype=np.float64) > kth))


def mrr(pos: np.ndarray, neg: np.ndarray) -> float:
    """OGB's MRR: each positive ranked against its own negatives ``neg[i]`` (ties take the
    mean of the optimistic and pessimistic rank)."""
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 1)
    neg = np.asarray(neg, dtype=np.float64)
    optimistic = (neg > pos).sum(axis=1)
    pessimistic = (neg >= pos).sum(axis=1)
    return float(np.mean(1.0 / (0.5 * (optimistic + pessimistic) + 1)))


def youden_threshold(pos: np.ndarray, neg: np.ndarray) -> float:
    """The score ``t`` maximising Youden's J = TPR - FPR (balanced accuracy, whatever the
    class ratio) when pairs scoring ``>= t`` are called edges; the highest such ``t`` on ties."""
    thresholds, tp, fp = _ranked(pos, neg)
    j = tp / max(len(pos), 1) - fp / max(len(neg), 1)
    return float(thresholds[int(np.argmax(j))])


def _merge_small(counts: Sequence[int], min_size: int) -> list[list[int]]:
    """Groups of consecutive bucket indices, each with at least ``min_size`` positives
    where possible: a small bucket joins the next one; a small last group the one before."""
    groups, current, size = [], [], 0
    for index, count in enumerate(counts):
        current.append(index)
        size += count
        if size >= min_size:
            groups.append(current)
            current, size = [], 0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def bucket_table(pos: np.ndarray, pos_bucket: np.ndarray, neg: np.ndarray,
                 neg_bucket: np.ndarray, threshold: float, min_size: int) -> list[dict]:
    """Precision and recall per distance bucket at ``threshold`` (pairs ``>= threshold`` are
    called edges), against the bucket's distance-matched negatives; empty buckets dropped,
    small ones merged (:func:`_merge_small`)."""
    counts = np.bincount(pos_bucket, minlength=len(BUCKETS))
    present = [i for i in range(len(BUCKETS)) if counts[i]]
    rows = []
    for group in _merge_small([int(counts[i]) for i in present], min_size):
        members = [present[i] for i in group]
        p = pos[np.isin(pos_bucket, members)]
        n = neg[np.isin(neg_bucket, members)]
        tp, fp = int((p >= threshold).sum()), int((n >= threshold).sum())
        rows.append({"bucket": "+".join(BUCKETS[i] for i in members), "positives": int(p.size),
                     "negatives": int(n.size), "recall": tp / p.size,
                     "precision": tp / (tp + fp) if tp + fp else None})
    return rows


def score_histogram(pos: np.ndarray, neg: np.ndarray, bins: int = 30) -> dict:
    """Counts of positive and negative scores over shared bins (for the inspector's plot)."""
    both = np.concatenate([pos, neg]).astype(np.float64)
    edges = np.histogram_bin_edges(both, bins=bins) if both.size else np.linspace(0, 1, bins + 1)
    return {"edges": edges.tolist(), "positives": np.histogram(pos, edges)[0].tolist(),
            "negatives": np.histogram(neg, edges)[0].tolist()}


def ranking_metrics(pos: np.ndarray, neg: np.ndarray, hits_at: Sequence[int]) -> dict:
    """AUC, AP and Hits@K of one split's positives against its negatives."""
    out = {"auc": roc_auc(pos, neg), "average_precision": average_precision(pos, neg),
           "positives": int(len(pos)), "negatives": int(len(neg))}
    out.update({f"hits@{k}": hits_at_k(pos, neg, k) for k in hits_at})
    return out
