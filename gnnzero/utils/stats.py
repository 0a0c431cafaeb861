"""Rank statistics shared by the node and link metrics: ROC-AUC and its interval."""
from __future__ import annotations

import math

import numpy as np


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half): the
    Mann-Whitney U statistic (scipy) over ``n_pos * n_neg``, scikit-learn's ``roc_auc_score``."""
    from scipy.stats import mannwhitneyu

    if not len(pos) or not len(neg):
        return float("nan")
    u = mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
    return float(u) / (len(pos) * len(neg))


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float]:
    """Hanley & McNeil (1982) normal interval of an AUC from ``n_pos`` / ``n_neg`` samples."""
    if not n_pos or not n_neg or math.isnan(auc):
        return 0.0, 1.0
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc)
           + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _macro_ovr(y: np.ndarray, num_classes: int, scores_of) -> float:
    """Mean over the classes with both positives and negatives among ``y`` of the ROC-AUC of
    ``scores_of(c)`` (every node's score for class ``c``), one class at a time."""
    aucs = []
    for c in range(num_classes):
        positive = y == c
        if 0 < int(positive.sum()) < len(y):
            score = scores_of(c)
            aucs.append(roc_auc(score[positive], score[~positive]))
    return float(np.mean(aucs)) if aucs else float("nan")


def macro_ovr_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC-AUC of class probabilities ``probs`` ``[n, C]``, averaged over the classes
    that have both positives and negatives among ``y`` (scikit-learn's ``roc_auc_score(...,
    multi_class="ovr", average="macro")`` when every class occurs)."""
    return _macro_ovr(np.asarray(y), probs.shape[1], lambda c: probs[:, c])


def macro_ovr_auc_of_logits(y: np.ndarray, logits: np.ndarray, rows: np.ndarray,
                            block: int = 1 << 16) -> float:
    """:func:`macro_ovr_auc` of ``softmax(logits[rows])`` without holding ``len(rows) x C``
    probabilities: the row-wise log-sum-exp once, then one class's column at a time (memory
    ``O(len(rows))``; ``logits`` may be a mapped file, read a block of rows at a time)."""
    log_total = np.empty(rows.size, dtype=np.float64)
    for a in range(0, rows.size, block):
        z = np.asarray(logits[rows[a:a + block]], dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        log_total[a:a + block] = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]

    def probabilities(c: int) -> np.ndarray:
        score = np.empty(rows.size, dtype=np.float32)     # the float32 softmax, as torch's
        for a in range(0, rows.size, block):
            z = np.asarray(logits[rows[a:a + block], c], dtype=np.float64)
            score[a:a + block] = np.exp(z - log_total[a:a + block])
        return score

    return _macro_ovr(np.asarray(y), logits.shape[1], probabilities)
