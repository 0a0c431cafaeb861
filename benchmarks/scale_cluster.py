"""Scale check: a 2M-node / 40M-edge synthetic graph, METIS, one Cluster-GCN epoch through DeepSpeed.

Two child processes, each under ``/usr/bin/time -v`` (peak RSS of the whole process):

1. ``partition`` -- generate the graph (timed), run METIS through pymetis (timed),
   build PyG's ``ClusterData`` (its permuted copy of the graph measured in bytes
   and in RSS growth) and fill the on-disk partition cache;
2. ``train`` -- ``launch/train.py`` for one epoch (single process, ZeRO-2); it
   regenerates the same graph, finds the partition in the cache (METIS skipped)
   and trains + evaluates over clusters.

Writes ``benchmarks/results/scale_cluster.{json,md}``.  Uses ~10 GB RAM at the
default size: run it alone.

    .venv/bin/python benchmarks/scale_cluster.py                      # 2M nodes
    .venv/bin/python benchmarks/scale_cluster.py --num-nodes 100000   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def partition_phase(args: argparse.Namespace) -> dict:
    """Generate, partition (METIS), build ClusterData; return timings and byte counts."""
    import torch

    from gnnzero.data import load_dataset
    from gnnzero.data.partition import PyMetisClusterData, metis_parts
    from gnnzero.observe.memory import reset_rss_high_water_mark, status_kib

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    dataset = load_dataset("synthetic", num_nodes=args.num_nodes, seed=0,
                           avg_degree=args.avg_degree, words_per_node=args.words_per_node)
    generation_s = time.perf_counter() - t0
    rss_after_generation = status_kib() * 1024
    num_parts = args.num_parts or max(2, args.num_nodes // 2000)
    t0 = time.perf_counter()
    parts = metis_parts(dataset.edge_index, dataset.num_nodes, num_parts, niter=args.metis_niter)
    metis_s = time.perf_counter() - t0
    from gnnzero.utils.atomic import atomic_torch_save
    atomic_torch_save(parts, os.path.join(args.cache_dir, dataset.fingerprint(),
                                          f"metis_{num_parts}.pt"))
    del parts
    rss_before = status_kib() * 1024
    hwm_reset = reset_rss_high_water_mark()
    t0 = time.perf_counter()
    cluster_data = PyMetisClusterData(dataset.structure(), num_parts, cache_dir=args.cache_dir,
                                      fingerprint=dataset.fingerprint())
    permute_s = time.perf_counter() - t0
    transient = (status_kib("VmHWM") * 1024 - rss_before) if hwm_reset else None
    assert cluster_data.metis_from_cache
    bytes_by_tensor = cluster_data.nbytes()
    return {
        "num_nodes": dataset.num_nodes, "num_edges_directed": dataset.num_edges,
        "num_edges_undirected": dataset.num_edges // 2, "num_features": dataset.num_features,
        "feature_nnz": int(dataset.features._store[(None, "x")].nnz),
        "feature_store": type(dataset.features).__name__,
        "feature_store_bytes": dataset.features.nbytes(),
        "dense_feature_bytes": dataset.num_nodes * dataset.num_features * 4,
        "edge_index_bytes": dataset.num_edges * 16,
        "num_parts": num_parts, "metis_niter": args.metis_niter,
        "generation_s": generation_s, "metis_s": metis_s,
        "cluster_data_build_s": permute_s,
        "cluster_data_bytes": bytes_by_tensor,
        "edge_perm_bytes_freed": dataset.num_edges * 8,
        "cluster_data_rss_growth_bytes": status_kib() * 1024 - rss_before,
        "cluster_data_build_peak_growth_bytes": transient,
        "rss_after_generation_bytes": rss_after_generation,
    }


def _time_v(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=REPO, env=env, text=True,
                          capture_output=True)
    stats = {}
    for key, pattern in (("peak_rss_bytes", r"Maximum resident set size \(kbytes\): (\d+)"),
                         ("wall_s", r"Elapsed \(wall clock\) time.*: ([\d:.]+)")):
        match = re.search(pattern, proc.stderr)
        if match and key == "peak_rss_bytes":
            stats[key] = int(match.group(1)) * 1024
        elif match:
            parts = [float(p) for p in match.group(1).split(":")]
            stats[key] = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return proc, stats


def _rss_split(metrics: dict) -> dict:
    """Where train.py's peak RSS came from, as the trainer measured it (rank 0)."""
    rank0 = metrics["memory"]["per_rank"][0]
    return {"rss_at_train_start_bytes": rank0.get("rss_at_train_start_bytes"),
            "train_step_peak_rss_bytes": rank0.get("host_step_peak_rss_bytes"),
            "epoch_end_val_accuracy": metrics["epochs"][-1].get("val_accuracy")}


def _markdown(result: dict) -> str:
    p, t = result["partition"], result["train"]
    gib = 2 ** 30
    cd = p["cluster_data_bytes"]
    rows = [
        ("graph", f"{p['num_nodes']:,} nodes, {p['num_edges_undirected']:,} undirected edges "
                  f"({p['num_edges_directed']:,} directed), {p['num_features']} sparse features"),
        ("features (CSR) vs dense", f"{p['feature_store_bytes'] / gib:.3f} GiB vs "
                                    f"{p['dense_feature_bytes'] / gib:.2f} GiB "
                                    f"({p['feature_nnz']:,} non-zeros)"),
        ("generation", f"{p['generation_s']:.1f} s"),
        ("METIS (pymetis, {} parts, niter={})".format(p["num_parts"], p.get("metis_niter")),
         f"{p['metis_s']:.1f} s"),
        ("ClusterData permute (METIS from cache)", f"{p['cluster_data_build_s']:.1f} s"),
        ("ClusterData permuted copy", f"{cd['total'] / gib:.2f} GiB (index {cd['index'] / gib:.2f}, "
                                      f"indptr+node_perm+n_id "
                                      f"{(cd['indptr'] + cd['node_perm'] + cd['node_attrs']) / gib:.3f}; "
                                      f"edge_perm {p['edge_perm_bytes_freed'] / gib:.2f} GiB freed) "
                                      f"vs edge_index {p['edge_index_bytes'] / gib:.2f} GiB"),
        ("ClusterData build: RSS growth (kept / peak)",
         f"{p['cluster_data_rss_growth_bytes'] / gib:.2f} / "
         + (f"{p['cluster_data_build_peak_growth_bytes'] / gib:.2f} GiB"
            if p.get("cluster_data_build_peak_growth_bytes") is not None else "n/a")),
        ("peak RSS, partition phase", f"{result['partition_peak_rss_bytes'] / gib:.2f} GiB"),
        ("train.py load (generate + cached partition)", f"{t.get('load_seconds', float('nan')):.1f} s"),
        ("one Cluster-GCN epoch ({} steps)".format(t.get("steps_per_epoch")),
         f"{t.get('epoch_time_s', float('nan')):.1f} s"),
        ("train.py wall (start-up, load, epoch, evaluations)", f"{result['train_wall_s']:.1f} s"),
        ("peak RSS, train.py", f"{result['train_peak_rss_bytes'] / gib:.2f} GiB"),
        ("  of which: RSS at train start / peak during training steps",
         f"{(t.get('rss_at_train_start_bytes') or 0) / gib:.2f} / "
         f"{(t.get('train_step_peak_rss_bytes') or 0) / gib:.2f} GiB "
         "(the rest of the peak is evaluation)"),
        ("val accuracy at epoch end (over clusters, inter-batch edges dropped)",
         f"{t.get('epoch_end_val_accuracy') or float('nan'):.4f}"),
        ("final evaluation", f"{t.get('final_evaluation_method')} over all {p['num_nodes']:,} nodes"),
        ("test accuracy after 1 epoch", f"{t.get('test_accuracy', float('nan')):.4f}"),
    ]
    lines = [f"# Scale: Cluster-GCN on a {p['num_nodes']:,}-node synthetic graph", "",
             f"Command: `{result['command']}`", "",
             "Machine: 2 CPU cores, 24 GiB RAM, shared with other jobs (timings are under "
             "contention). Peak RSS from `/usr/bin/time -v`.", "",
             "| what | measured |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-nodes", type=int, default=2_000_000)
    parser.add_argument("--avg-degree", type=float, default=40.0)
    parser.add_argument("--words-per-node", type=float, default=5.0)
    parser.add_argument("--num-parts", type=int, default=0, help="0 = ~2000 nodes a part")
    parser.add_argument("--clusters-per-batch", type=int, default=4)
    parser.add_argument("--sampled-eval-nodes", type=int, default=0,
                        help="per-epoch validation on this many nodes (0 = over clusters); "
                             "the final evaluation is exact either way")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--model", default="gcn",
                        help="gcn transforms 500 -> hidden before message passing (cheap on CPU)")
    parser.add_argument("--metis-niter", type=int, default=1,
                        help="METIS refinement iterations (METIS default 10; 1 ~halves the time)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale_cluster"))
    parser.add_argument("--phase", choices=["partition"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "partition":
        print(json.dumps(partition_phase(args)))
        return

    cache = args.cache_dir or tempfile.mkdtemp(prefix="gnnzero-scale-")
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    common = ["--num-nodes", str(args.num_nodes), "--avg-degree", str(args.avg_degree),
              "--words-per-node", str(args.words_per_node), "--cache-dir", cache]
    print(f"[1/2] generate + METIS + ClusterData ({args.num_nodes:,} nodes) ...", flush=True)
    proc, part_stats = _time_v([sys.executable, __file__, "--phase", "partition",
                                "--num-parts", str(args.num_parts), "--metis-niter",
                                str(args.metis_niter), *common], env)
    if proc.returncode != 0:
        sys.exit(f"partition phase failed:\n{proc.stderr[-3000:]}")
    partition = json.loads(proc.stdout.strip().splitlines()[-1])

    out_dir = tempfile.mkdtemp(prefix="gnnzero-scale-run-")
    train_args = ["launch/train.py", "--ds_config", "ds_configs/zero2.json", "--epochs", "1",
                  "--loader", "cluster", "--num-parts", str(partition["num_parts"]),
                  "--clusters-per-batch", str(args.clusters_per_batch),
                  "--sampled-eval-nodes", str(args.sampled_eval_nodes), "--model", args.model,
                  "--hidden", str(args.hidden), "--no-checkpoint", "--output-dir", out_dir, *common]
    print("[2/2] launch/train.py, one Cluster-GCN epoch (METIS from cache) ...", flush=True)
    proc, train_stats = _time_v([sys.executable, *train_args], env)
    if proc.returncode != 0:
        sys.exit(f"train phase failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    train = {"load_seconds": metrics["load_seconds"], "epoch_time_s": metrics["epoch_time_s"],
             "steps_per_epoch": metrics["loader"]["steps_per_epoch"],
             "test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
             "step_time_split_s": metrics["memory"]["per_rank"][0].get("step_time_split_s"),
             "num_parameters": metrics["num_parameters"],
             "final_evaluation_method": metrics.get("evaluation", {}).get("test", {}).get("method"),
             "epoch_log": metrics.get("epochs"), **_rss_split(metrics)}
    result = {
        "command": "python " + " ".join(train_args).replace(out_dir, "OUT").replace(cache, "CACHE"),
        "partition": partition, "partition_peak_rss_bytes": part_stats.get("peak_rss_bytes"),
        "partition_wall_s": part_stats.get("wall_s"), "train": train,
        "train_peak_rss_bytes": train_stats.get("peak_rss_bytes"),
        "train_wall_s": train_stats.get("wall_s"),
        "peak_rss_bytes": max(part_stats.get("peak_rss_bytes", 0),
                              train_stats.get("peak_rss_bytes", 0)),
        "ram_limit_bytes": 24 * 2 ** 30, "cpu_cores": os.cpu_count(),
        "note": "2 shared CPU cores; timings are under contention from other jobs",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    with open(args.out + ".md", "w", encoding="utf-8") as handle:
        handle.write(_markdown(result))
    print(_markdown(result))
    shutil.rmtree(out_dir, ignore_errors=True)
    if not args.cache_dir:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
