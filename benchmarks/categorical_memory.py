"""Categorical columns embedded (``--categorical``, EmbeddingBag) against one-hot encoding
(dense and sparse CSR features): host memory, model size, time and accuracy, one rank each.

A synthetic graph (20,000 nodes, 500 sparse word features) gets three integer-encoded
columns of 20, 2,000 and 20,000 values; the first carries the label (70 % of nodes), so
the categories matter.  Each variant is one ``python launch/train.py`` process (ZeRO-2,
Cluster-GCN, GraphSAGE hidden 64), so its peak RSS is its own.

    .venv/bin/python benchmarks/categorical_memory.py   # writes benchmarks/results/categorical_memory.{json,md}
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.tables import write_result  # noqa: E402
CARDINALITIES = (20, 2_000, 20_000)


def write_files(work: Path, num_nodes: int, seed: int = 0) -> dict[str, Path]:
    """The same graph three ways: x + x_cat, x + one-hot columns dense, and sparse."""
    from gnnzero.data.categorical import CategoricalEncoder
    from gnnzero.data.datasets import load_synthetic

    ds = load_synthetic(num_nodes, seed=seed, feature_format="sparse")
    x = ds.features.rows(torch.arange(num_nodes)).numpy()
    rng = np.random.default_rng(seed)
    y = ds.y.numpy()
    label_code = np.where(rng.random(num_nodes) < 0.7, y, rng.integers(0, CARDINALITIES[0],
                                                                       num_nodes))
    x_cat = np.stack([label_code] + [rng.integers(0, c, num_nodes) for c in CARDINALITIES[1:]],
                     1)
    ids = CategoricalEncoder().fit_transform(x_cat).numpy()
    width = int(ids.max()) + 1
    one_hot = sp.csr_matrix((np.ones(ids.size, np.float32),
                             (np.repeat(np.arange(num_nodes), ids.shape[1]), ids.ravel())),
                            shape=(num_nodes, width))
    common = {"edge_index": ds.edge_index, "y": ds.y, **ds.masks}
    files = {"embedded (--categorical)": work / "embedded.pt",
             "one-hot, dense": work / "one_hot_dense.pt",
             "one-hot, sparse CSR": work / "one_hot_sparse.npz"}
    torch.save({**common, "x": torch.from_numpy(x), "x_cat": torch.from_numpy(x_cat)},
               files["embedded (--categorical)"])
    torch.save({**common, "x": torch.from_numpy(np.hstack([x, one_hot.toarray()]))},
               files["one-hot, dense"])
    both = sp.hstack([sp.csr_matrix(x), one_hot]).tocsr()
    np.savez(files["one-hot, sparse CSR"], x_data=both.data, x_indices=both.indices,
             x_indptr=both.indptr, x_shape=np.array(both.shape),
             **{k: v.numpy() for k, v in common.items()})
    return files


# The word features stay in a sparse store for the embedded variant too (its batches are
# dense: the embedding is concatenated to x).
VARIANT_FLAGS = {"embedded (--categorical)": ["--categorical", "--feature-store", "sparse"],
                 "one-hot, dense": ["--feature-store", "dense"],
                 "one-hot, sparse CSR": ["--feature-store", "sparse"]}


def run_variant(name: str, path: Path, work: Path, epochs: int) -> dict:
    out = work / name.split()[0].strip(",") / path.stem
    cmd = [sys.executable, str(REPO / "launch" / "train.py"), "--ds_config",
           str(REPO / "ds_configs" / "zero2.json"), "--dataset", str(path), "--model", "sage",
           "--hidden", "64", "--loader", "cluster", "--epochs", str(epochs), "--eval-every",
           str(epochs), "--no-checkpoint", "--output-dir", str(out), "--cache-dir",
           str(work / "cache"), *VARIANT_FLAGS[name]]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    rank = metrics["memory"]["per_rank"][0]
    return {"variant": name, "command": " ".join(cmd[1:]).replace(str(REPO) + "/", ""),
            "feature_columns": metrics["dataset"]["num_features"],
            "feature_store_bytes": metrics["dataset"]["feature_store_bytes"],
            "num_parameters": metrics["num_parameters"],
            "model_state_bytes": rank["model_state_bytes"]["total"],
            "batch_bytes_peak": rank.get("batch_bytes_peak"),
            "peak_rss_bytes": rank["peak_bytes"], "epoch_time_s": metrics["epoch_time_s"],
            "test_accuracy": metrics["test_accuracy"], "environment": metrics["environment"]}


def markdown(result: dict) -> str:
    from gnnzero.observe.memory import format_bytes
    from gnnzero.observe.report import markdown_table

    env = result["environment"]
    rows = [{"variant": r["variant"], "feature columns": f"{r['feature_columns']:,}",
             "feature store": format_bytes(r["feature_store_bytes"]),
             "parameters": f"{r['num_parameters']:,}",
             "model states": format_bytes(r["model_state_bytes"]),
             "peak batch": format_bytes(r["batch_bytes_peak"] or 0),
             "peak RSS": format_bytes(r["peak_rss_bytes"]),
             "epoch time": f"{r['epoch_time_s']:.2f} s",
             "test accuracy": f"{r['test_accuracy']:.4f}"} for r in result["runs"]]
    return "\n".join([
        f"# Categorical columns: embedded vs one-hot ({result['num_nodes']:,} nodes)", "",
        f"Device: {env['device']}; torch {env['torch']}, DeepSpeed {env['deepspeed']}; commit "
        f"{env['git_commit']}.  Command: `.venv/bin/python benchmarks/categorical_memory.py`.",
        "", f"Three integer columns of {', '.join(f'{c:,}' for c in CARDINALITIES)} values "
            f"beside 500 sparse word features; one `python launch/train.py` process per "
            f"variant (ZeRO-2, Cluster-GCN, GraphSAGE hidden 64, {result['epochs']} epochs, "
            f"`--categorical-dim 16`).", "",
        markdown_table(rows, list(rows[0])), ""])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-nodes", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" /
                                             "categorical_memory"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="categorical_"))
    files = write_files(work, args.num_nodes)
    runs = [run_variant(name, path, work, args.epochs) for name, path in files.items()]
    env = runs[0]["environment"]
    for run in runs:
        run.pop("environment")
    result = {"num_nodes": args.num_nodes, "epochs": args.epochs,
              "cardinalities": CARDINALITIES, "runs": runs, "environment": env}
    write_result(Path(args.out), result, markdown(result))
    return result


if __name__ == "__main__":
    main()
