"""`benchmarks/run.py --smoke`: 3 real `deepspeed` launches + 2 plain-PyG baselines (~2-3 min).

Checks the harness output against closed forms (ZeRO model-state bytes from the
parameter count) and against the plain-PyTorch baseline run on the same batches.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.e2e
def test_bench_smoke_writes_records_table_and_plot(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--smoke", "--results-dir",
                           str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for ext in ("jsonl", "md", "png"):
        assert (tmp_path / "results" / f"bench_smoke.{ext}").stat().st_size > 0
    lines = (tmp_path / "results" / "bench_smoke.jsonl").read_text().splitlines()
    records = {(r["config"], r["rank"]): r for r in map(json.loads, lines)}
    assert set(records) == {("baseline_cluster_dense", 0), ("baseline_full_shared-lowrank", 0),
                            ("z0_fp32_w1_cluster_dense", 0), ("z3_bf16_w2_cluster_dense", 0),
                            ("z3_bf16_w2_cluster_dense", 1), ("z2_fp32_w1_full_shared-lowrank", 0)}
    for record in records.values():
        env = record["environment"]
        assert env["device"] and env["torch"] and env["deepspeed"] and env["git_commit"]
        assert record["memory_kind"] == "process_peak_rss"       # CPU: labelled as RSS
        assert record["train_nodes_per_s"] > 0 and record["batches_per_s"] > 0

    def states(key):
        record = records[key]
        return record["model_state_bytes"]["total"], record["num_parameters"]

    # Closed forms (bytes per parameter Ψ): plain fp32 AdamW and ZeRO-0 fp32 hold 16Ψ exactly.
    for key in (("baseline_cluster_dense", 0), ("z0_fp32_w1_cluster_dense", 0)):
        total, psi = states(key)
        assert total == 16 * psi, key
    # ZeRO-3 bf16 over 2 ranks: 16Ψ/2 per rank, except that the parameters DeepSpeed keeps
    # whole (stage3_param_persistence_threshold) are 2 bytes each on every rank; the formula
    # counts them, up to flat-buffer alignment padding.
    for rank in (0, 1):
        total, psi = states(("z3_bf16_w2_cluster_dense", rank))
        formula = records[("z3_bf16_w2_cluster_dense", rank)]["zero_formula_bytes"]
        expected = formula["all_devices"]["total"]
        assert 8 * psi < expected <= 10 * psi  # the persistent parameters' full copies
        assert expected <= total <= expected * 1.01 + 1024
    # ZeRO-2 fp32 keeps a separate fp32 master copy: 20Ψ, 1.25x the paper's fp32 formula.
    total, psi = states(("z2_fp32_w1_full_shared-lowrank", 0))
    assert 20 * psi <= total <= 20 * psi * 1.01 + 1024
    assert records[("z2_fp32_w1_full_shared-lowrank", 0)]["model_state_measured_over_formula"] \
        == pytest.approx(1.25, rel=0.01)

    # Same model, same batches, fp32: the DeepSpeed run saves exactly the baseline's activations.
    ds, base = records[("z0_fp32_w1_cluster_dense", 0)], records[("baseline_cluster_dense", 0)]
    assert ds["activation_bytes"]["peak"] == base["activation_bytes"]["peak"] > 0
    assert ds["batch_bytes_peak"] == base["batch_bytes_peak"] > 0
    assert ds["working_set_over_baseline"] == pytest.approx(1.0)
    assert ds["throughput_over_baseline"] > 0
    # bf16 halves the floating activations of a rank that sees about half the clusters.
    z3 = records[("z3_bf16_w2_cluster_dense", 0)]
    assert z3["activation_bytes"]["peak"] < base["activation_bytes"]["peak"]
    table = (tmp_path / "results" / "bench_smoke.md").read_text()
    assert "measured/formula" in table and "thr vs baseline" in table


@pytest.mark.e2e
def test_bench_runs_link_prediction_configurations(tmp_path):
    """`--task link`: one ZeRO-2 launch + its baseline, recorded with the link figures and
    scored pairs per second; the model states follow the same closed form (20Ψ for fp32
    ZeRO-2, 16Ψ for the baseline)."""
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--task", "link", "--stages", "2",
                           "--precisions", "fp32", "--worlds", "1", "--loaders", "cluster",
                           "--models", "dense", "--num-nodes", "1500", "--layers", "2",
                           "--epochs", "1", "--tag", "link", "--results-dir",
                           str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (tmp_path / "results" / "bench_link.jsonl").read_text().splitlines()
    records = {r["config"]: r for r in map(json.loads, lines)}
    assert set(records) == {"baseline_cluster_dense", "z2_fp32_w1_cluster_dense"}
    for record in records.values():
        assert record["task"] == "link" and record["test_metric"] == "auc"
        assert 0.0 <= record["test_auc"] <= 1.0 and record["test_accuracy"] is None
        assert record["train_pairs_per_s"] > 0
        assert record["train_rate_per_s"] == record["train_pairs_per_s"]
    psi = records["baseline_cluster_dense"]["num_parameters"]
    assert records["baseline_cluster_dense"]["model_state_bytes"]["total"] == 16 * psi
    assert 20 * psi <= records["z2_fp32_w1_cluster_dense"]["model_state_bytes"]["total"] \
        <= 20 * psi * 1.01 + 1024
    table = (tmp_path / "results" / "bench_link.md").read_text()
    assert "AUC " in table and " pairs |" in table
    refused = subprocess.run([sys.executable, "benchmarks/run.py", "--task", "link",
                              "--loaders", "saint-rw"], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "--loaders saint-rw is not one of full,cluster,neighbor" \
        in refused.stderr


@pytest.mark.e2e
def test_zero3_hooks_benchmark_times_three_engines(tmp_path):
    """benchmarks/zero3_hooks.py: the plain loop, DeepSpeed's hooks and gnnzero's replacement
    (the script refuses to time engines whose hooks are not what their names say)."""
    proc = subprocess.run([sys.executable, "benchmarks/zero3_hooks.py", "--rounds", "1",
                           "--tag", "test", "--results-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "zero3_hooks_test.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ") and " ms |" in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| plain loop", "| ZeRO-3, DeepSpeed's hooks", "| ZeRO-3, hooks replaced"]
    assert rows[0].endswith("| 1.000x |")
    for row in rows:
        assert float(row.split(" | ")[1].removesuffix(" ms")) > 0


@pytest.mark.e2e
def test_paired_interleave_runs_both_sides_in_turns(tmp_path):
    """`run.py --paired --interleave`: the DeepSpeed run and the plain loop start together and
    pass every epoch's turn through the pair's turn file (3 epochs each: 6 turns)."""
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--paired", "--interleave",
                           "--stages", "2", "--precisions", "fp32", "--worlds", "1",
                           "--loaders", "cluster", "--models", "dense", "--repeats", "1",
                           "--epochs", "3", "--num-nodes", "1500", "--hidden", "16",
                           "--tag", "t", "--results-dir", str(tmp_path / "results"),
                           "--work-dir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "paired_t.jsonl").read_text())
    assert record["config"] == "z2_fp32_w1_cluster_dense" and record["ratio"] > 0
    pair = tmp_path / "work" / "t" / "z2_fp32_w1_cluster_dense_r0"
    assert json.loads((pair / "turns.json").read_text()) == {"turn": 6}
    for seat in (0, 1):
        assert json.loads((pair / f"turns.json.finished-{seat}").read_text()) == {
            "turns_taken": 3}
    for run in ("z2_fp32_w1_cluster_dense", "baseline_cluster_dense"):
        metrics = json.loads((pair / "runs" / run / "metrics.json").read_text())
        assert metrics["config"]["train"]["take_turns"].endswith(f"turns.json:{int(run[0] == 'z')}")
    assert "trained their epochs in turn" in (tmp_path / "results" / "paired_t.md").read_text()
