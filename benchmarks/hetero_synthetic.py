"""Heterogeneous training through DeepSpeed: the synthetic paper/author graph against the same
papers alone, and the heterogeneous model shapes (GAT, low-rank + shared SAGE at ZeRO-3 on
2 ranks); test accuracy, epoch time and per-rank peak memory over seeds.

Each run is one ``deepspeed launch/train.py`` launch with neighbour sampling, so its peak
RSS is its own.  ``synthetic-hetero`` is built on ``synthetic`` of the same size and seed
(its papers are exactly that graph), so the rows differ only in the author relation.

    .venv/bin/python benchmarks/hetero_synthetic.py   # writes benchmarks/results/hetero_synthetic.{json,md}
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.tables import write_result  # noqa: E402

# name -> (ranks, ds_config, flags)
VARIANTS = {
    "papers only, SAGE, ZeRO-2": (1, "zero2.json", ["--dataset", "synthetic", "--model", "sage"]),
    "papers + authors, SAGE, ZeRO-2": (1, "zero2.json", ["--dataset", "synthetic-hetero",
                                                         "--model", "sage"]),
    "papers + authors, GAT 2 heads, ZeRO-2": (1, "zero2.json", [
        "--dataset", "synthetic-hetero", "--model", "gat", "--heads", "2"]),
    "papers + authors, SAGE 4 layers rank 16 shared, ZeRO-3, 2 ranks": (2, "zero3.json", [
        "--dataset", "synthetic-hetero", "--model", "sage", "--layers", "4", "--rank", "16",
        "--share-weights", "--num-neighbors", "10,5,5,5"]),
}


def run_one(name: str, seed: int, work: Path, args: argparse.Namespace) -> dict:
    ranks, config, flags = VARIANTS[name]
    out = work / f"{abs(hash(name)) % 10**8}-{seed}"
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(ranks),
           "--master_port", str(29700 + os.getpid() % 200), "launch/train.py", "--ds_config", str(REPO / "ds_configs" / config),
           "--num-nodes", str(args.num_nodes), "--loader", "neighbor", "--num-neighbors",
           "10,10", "--batch-size", "512", "--hidden", "64", "--epochs", str(args.epochs),
           "--seed", str(seed), "--no-checkpoint", "--output-dir", str(out),
           "--cache-dir", str(work / "cache"), *args.graph.split(), *flags]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // ranks)))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{name} seed {seed} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    per_rank = metrics["memory"]["per_rank"]
    return {"variant": name, "seed": seed, "ranks": ranks,
            "test_accuracy_best_val": metrics["headline"]["test_accuracy"],
            "test_accuracy_last": metrics["test_accuracy"],
            "epoch_time_s": metrics["epoch_time_s"],
            "step_time_split_s": per_rank[0]["step_time_split_s"],
            "peak_bytes_max_rank": max(r["peak_bytes"] for r in per_rank),
            "num_parameters": metrics["num_parameters"],
            "final_method": metrics["evaluation"]["test"]["method"],
            "command": " ".join(cmd[1:])}


def _split(rows: list[dict]) -> str:
    """Rank 0's step time by phase, in percent, summed over the rows."""
    phases = ("sampling", "forward", "backward", "optimizer")
    sums = {p: sum(r["step_time_split_s"][p] for r in rows) for p in phases}
    total = sum(sums.values()) or 1.0
    return " / ".join(f"{100 * sums[p] / total:.0f}" for p in phases)


def table(rows: list[dict]) -> str:
    lines = ["| variant | seeds | test acc. (best-val epoch) | last epoch | epoch time | "
             "sampling / forward / backward / optimizer | peak per rank | parameters |",
             "|---|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        accs = [100 * r["test_accuracy_best_val"] for r in mine]
        last = [100 * r["test_accuracy_last"] for r in mine]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {name} | {len(mine)} | {statistics.mean(accs):.2f} ± {spread:.2f} | "
                     f"{statistics.mean(last):.2f} | "
                     f"{statistics.mean(r['epoch_time_s'] for r in mine):.2f} s | "
                     f"{_split(mine)} | "
                     f"{max(r['peak_bytes_max_rank'] for r in mine) / 2**20:.0f} MiB | "
                     f"{mine[0]['num_parameters']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-nodes", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    # A hard graph (one word a node, degree 2) with clean labels: the authors' classes come
    # from the papers' labels, so noise there would blur the relation being measured.
    parser.add_argument("--graph", default="--avg-degree 2 --words-per-node 1 --label-noise 0",
                        help="generator flags of the papers' graph")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "hetero_synthetic"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gnnzero-hetero-") as tmp:
        for seed in range(args.seeds):          # variants alternate within each seed
            for name in VARIANTS:
                rows.append(run_one(name, seed, Path(tmp), args))
                print(json.dumps(rows[-1]), flush=True)
    import torch

    from gnnzero.observe.report import run_environment

    environment = run_environment(torch.device("cpu"))
    text = (f"# Heterogeneous graphs through DeepSpeed (synthetic paper/author graph)\n\n"
            f"{args.num_nodes:,} papers (the synthetic generator's graph, `{args.graph}`), "
            f"{args.num_nodes // 4:,} authors writing 3 papers each, 80 % of them in the "
            f"author's class; neighbour sampling 10 per layer and edge type, 512 seeds, hidden "
            f"64, {args.epochs} epochs, seeds 0-{args.seeds - 1}. Final evaluation exact "
            f"(whole graph). {environment['device']}, {os.cpu_count()} "
            f"cores; commit {environment['git_commit']}.\n\n{table(rows)}\n\n"
            f"Command: `.venv/bin/python benchmarks/hetero_synthetic.py --num-nodes "
            f"{args.num_nodes} --epochs {args.epochs} --seeds {args.seeds} --graph "
            f"'{args.graph}'`\n")
    write_result(Path(args.out), {"rows": rows, "environment": environment}, text)


if __name__ == "__main__":
    main()
