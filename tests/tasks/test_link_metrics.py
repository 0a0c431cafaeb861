"""Link metrics against references: scikit-learn (AUC, AP, the F1 threshold), OGB's
Evaluator formulas written out in torch (Hits@K, MRR), and their statistics on random scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from gnnzero.tasks.link_metrics import (auc_interval, average_precision, youden_threshold,
                                        bucket_table, hits_at_k, mrr, roc_auc)


def _scores(seed: int, n_pos: int = 300, n_neg: int = 500, ties: bool = False):
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(0.8, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)
    if ties:   # few distinct values: every threshold is a tie of both classes
        pos, neg = np.round(pos, 0), np.round(neg, 0)
    return pos, neg


def _sk(pos, neg):
    return np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_average_precision_match_scikit_learn(seed, ties):
    pos, neg = _scores(seed, ties=ties)
    y, s = _sk(pos, neg)
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(pos, neg) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def _ogb_hits(pos: torch.Tensor, neg: torch.Tensor, k: int) -> float:
    # ogb.linkproppred.Evaluator._eval_hits (torch branch), verbatim in substance
    if len(neg) < k:
        return 1.0
    kth_score_in_negative_edges = torch.topk(neg, k)[0][-1]
    return float(torch.sum(pos > kth_score_in_negative_edges).cpu()) / len(pos)


def _ogb_mrr(pos: torch.Tensor, neg: torch.Tensor) -> float:
    # ogb.linkproppred.Evaluator._eval_mrr (torch branch; OGB computes the ranks in float32)
    optimistic_rank = (neg > pos.view(-1, 1)).sum(dim=1)
    pessimistic_rank = (neg >= pos.view(-1, 1)).sum(dim=1)
    ranking_list = 0.5 * (optimistic_rank + pessimistic_rank) + 1
    return float((1.0 / ranking_list.float()).mean())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 10, 50, 600])
def test_hits_at_k_is_ogbs(seed, k):
    pos, neg = _scores(seed, ties=seed == 2)
    assert hits_at_k(pos, neg, k) == pytest.approx(
        _ogb_hits(torch.tensor(pos), torch.tensor(neg), k), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_mrr_is_ogbs(ties):
    rng = np.random.default_rng(5)
    pos, neg = rng.normal(0.5, 1, 200), rng.normal(0, 1, (200, 40))
    if ties:
        pos, neg = np.round(pos), np.round(neg)
    assert mrr(pos, neg) == pytest.approx(_ogb_mrr(torch.tensor(pos), torch.tensor(neg)),
                                          abs=1e-6)
    # hand example: ranks 1, 3 and (tie with one negative) 1.5
    assert mrr(np.array([5.0, 1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 0.0]])) == \
        pytest.approx((1 + 1 / 3 + 1 / 1.5) / 3)


def test_random_scores_give_the_expected_hits_at_k():
    """A positive beats the K-th best of M exchangeable negatives with probability K/(M+1)."""
    m, k = 1000, 50
    rng = np.random.default_rng(0)
    hits = [hits_at_k(rng.random(2000), rng.random(m), k) for _ in range(40)]
    assert np.mean(hits) == pytest.approx(k / (m + 1), abs=0.006)


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_is_scikit_learns_best_youden_j(ties):
    pos, neg = _scores(1, ties=ties)
    fpr, tpr, thresholds = roc_curve(*_sk(pos, neg))
    assert youden_threshold(pos, neg) == thresholds[int(np.argmax(tpr - fpr))]


def test_auc_interval_covers_the_true_auc_about_95_percent_of_the_time():
    """Binormal scores with shift d have AUC Phi(d / sqrt 2); the Hanley-McNeil interval from
    200 + 200 samples should contain it in about 95 % of draws."""
    from scipy.stats import norm

    d, n, trials = 1.0, 200, 400
    true_auc = float(norm.cdf(d / math.sqrt(2)))
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(trials):
        pos, neg = rng.normal(d, 1, n), rng.normal(0, 1, n)
        low, high = auc_interval(roc_auc(pos, neg), n, n)
        covered += low <= true_auc <= high
    assert 0.92 <= covered / trials <= 0.98


def test_bucket_table_counts_and_merges_small_buckets():
    # buckets 0 ("2"): 30 positives, 1 ("3"): 5, 3 ("≥5"): 25, none at 2 ("4")
    pos_bucket = np.r_[np.zeros(30, int), np.ones(5, int), np.full(25, 3)]
    pos = np.r_[np.ones(30), np.zeros(5), np.r_[np.ones(10), np.zeros(15)]]
    neg_bucket = pos_bucket.copy()
    neg = np.r_[np.ones(15), np.zeros(15), np.zeros(5), np.zeros(25)]
    table = bucket_table(pos, pos_bucket, neg, neg_bucket, threshold=0.5, min_size=20)
    assert [r["bucket"] for r in table] == ["2", "3+≥5"]
    assert table[0] == {"bucket": "2", "positives": 30, "negatives": 30, "recall": 1.0,
                        "precision": 30 / 45}
    assert table[1]["positives"] == 30 and table[1]["recall"] == pytest.approx(10 / 30)
    assert table[1]["precision"] == 1.0


@pytest.mark.parametrize("dataset, k", [("ogbl-ddi", 20), ("ogbl-collab", 50), ("ogbl-ppa", 100)])
def test_hits_at_k_equals_ogbs_evaluator(dataset, k):
    """OGB's own Evaluator (the ogb package; its metadata ships with it, nothing downloaded)."""
    linkproppred = pytest.importorskip("ogb.linkproppred")
    pos, neg = _scores(7, n_pos=400, n_neg=3000, ties=True)
    evaluator = linkproppred.Evaluator(dataset)
    assert evaluator.K == k
    expected = evaluator.eval({"y_pred_pos": torch.tensor(pos), "y_pred_neg": torch.tensor(neg)})
    assert hits_at_k(pos, neg, k) == pytest.approx(expected[f"hits@{k}"], abs=1e-12)


def test_mrr_equals_ogbs_evaluator():
    linkproppred = pytest.importorskip("ogb.linkproppred")
    rng = np.random.default_rng(8)
    pos, neg = np.round(rng.normal(0.5, 1, 300), 1), np.round(rng.normal(0, 1, (300, 50)), 1)
    expected = linkproppred.Evaluator("ogbl-citation2").eval(
        {"y_pred_pos": torch.tensor(pos), "y_pred_neg": torch.tensor(neg)})
    assert mrr(pos, neg) == pytest.approx(float(expected["mrr_list"].mean()), abs=1e-6)
