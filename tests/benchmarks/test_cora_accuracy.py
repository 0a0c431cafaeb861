"""`benchmarks/cora_accuracy.paired_gap` against scipy's paired t-test (an independent reference)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.helpers import script_module


def _load_cora_accuracy():
    return script_module("benchmarks/cora_accuracy.py")


def _runs(accs, seeds):
    return {"runs": [{"seed": s, "test_accuracy": a} for s, a in zip(seeds, accs)]}


def test_paired_gap_matches_scipy_paired_t_test():
    paired_gap = _load_cora_accuracy().paired_gap
    rng = np.random.default_rng(0)
    dense = 0.79 + 0.012 * rng.standard_normal(20)
    low = dense - 0.012 + 0.02 * rng.standard_normal(20)
    # Low-rank runs listed in another order and with one extra seed: pairing is by seed.
    order = rng.permutation(20)
    gap = paired_gap(_runs(dense, range(20)),
                     _runs([*low[order], 0.5], [*order.tolist(), 99]))

    test = stats.ttest_rel(100 * dense, 100 * low, alternative="less")
    upper = test.confidence_interval(0.95).high
    diff = 100 * (dense - low)
    assert gap["seeds"] == 20
    assert gap["mean"] == pytest.approx(diff.mean())
    assert gap["standard_error"] == pytest.approx(diff.mean() / test.statistic)
    assert gap["upper_95"] == pytest.approx(upper)
    assert gap["first_5_seeds"] == pytest.approx(diff[:5].mean())


def test_paired_gap_single_seed_has_no_error_bar():
    gap = _load_cora_accuracy().paired_gap(_runs([0.80], [0]), _runs([0.78], [0]))
    assert gap["mean"] == pytest.approx(2.0)
    assert math.isnan(gap["standard_error"]) and math.isnan(gap["upper_95"])
