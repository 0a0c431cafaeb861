"""`benchmarks/accuracy.py`: the matrix's paired differences against scipy's paired t-test,
and its table's goal marks."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from scipy import stats

from tests.helpers import script_module


def test_paired_difference_and_its_standard_error_match_scipy():
    matrix = script_module("benchmarks/accuracy.py")
    rng = np.random.default_rng(1)
    ref = 0.9 + 0.01 * rng.standard_normal(5)
    cell = ref - 0.004 + 0.006 * rng.standard_normal(5)
    rows = {"a": dict(enumerate(cell)), "b": {**dict(enumerate(ref)), 7: 0.1}}  # 7: unpaired
    gap = matrix.paired(rows, "a", "b")
    test = stats.ttest_rel(100 * cell, 100 * ref)
    assert gap["seeds"] == 5
    assert gap["mean"] == pytest.approx(100 * float(np.mean(cell - ref)))
    assert gap["mean"] / gap["se"] == pytest.approx(float(test.statistic))
    assert matrix.paired(rows, "a", "missing") is None


def test_the_table_marks_cells_against_their_goals():
    matrix = script_module("benchmarks/accuracy.py")
    env = {"device": "CPU", "torch": "t", "deepspeed": "d", "git_commit": "abc"}
    rows = []
    for seed, (full, bf16, cluster) in enumerate([(0.90, 0.885, 0.881), (0.91, 0.897, 0.891)]):
        for loader, precision, acc in (("full", "fp32", full), ("full", "bf16", bf16),
                                       ("cluster", "fp32", cluster)):
            rows.append({"stage": 0, "precision": precision, "loader": loader,
                         "model": "dense", "seed": seed, "test_accuracy": acc,
                         "environment": env})
    args = argparse.Namespace(epochs=100, slice_flags=["--stages 0"])
    text = matrix.markdown(rows, args)
    lines = {tuple(c.strip() for c in line.split("|")[1:5]): line
             for line in text.splitlines() if line.startswith("| dense")}
    assert "reference" in lines[("dense", "full", "0", "fp32")]
    assert "-1.40 ± 0.10 MISS" in lines[("dense", "full", "0", "bf16")]   # > 1 point
    assert "-1.90 ± 0.00 ok" in lines[("dense", "cluster", "0", "fp32")]  # < 2 points


def test_receptive_field_variants_run_their_loader_and_are_set_beside_full_batch():
    matrix = script_module("benchmarks/accuracy.py")
    assert matrix.LOADER_FLAGS["cluster-16"] == ["--loader", "cluster", "--clusters-per-batch",
                                                 "16"]
    assert matrix.LOADER_FLAGS["saint-rw-4"] == ["--loader", "saint-rw", "--walk-length", "4"]
    assert matrix.LOADER_FLAGS["cluster"][:2] == ["--loader", "cluster"]
    env = {"device": "CPU", "torch": "t", "deepspeed": "d", "git_commit": "abc"}
    rows = [{"stage": 0, "precision": "fp32", "loader": loader, "model": "dense", "seed": seed,
             "test_accuracy": acc, "environment": env}
            for seed in (0, 1) for loader, acc in (("full", 0.90 + seed / 100),
                                                  ("cluster-16", 0.89 + seed / 100))]
    text = matrix.markdown(rows, argparse.Namespace(epochs=100, slice_flags=[]))
    (line,) = [x for x in text.splitlines() if x.startswith("| dense | cluster-16")]
    assert line.rstrip().endswith("-1.00 ± 0.00 ok |")
    assert "not matrix cells" in text
