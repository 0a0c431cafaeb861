"""Benchmark sweep: per-rank memory and throughput of ZeRO configurations against a plain-PyG baseline.

    python benchmarks/run.py --smoke                       # 3 configurations, < 3 minutes
    python benchmarks/run.py --plan cpu-moderate --tag cpu # what benchmarks/results/bench_cpu.* holds
    python benchmarks/run.py --stages 0,1,2,3,3+offload --precisions fp32,bf16 \\
        --worlds 1,2 --loaders full,cluster,saint-rw,neighbor --models dense,shared-lowrank
    python benchmarks/run.py --scaling --tag cpu           # graph size 1e4 .. 1e6 (benchmarks/scaling.py)

Every configuration is its own ``deepspeed --num_gpus W launch/train.py`` process;
every distinct (loader, model) also runs ``benchmarks/baseline.py``.  Output in
``--results-dir``: ``bench_<tag>.jsonl`` (one record per configuration and rank),
``bench_<tag>.md`` and ``bench_<tag>.png``; per-run logs under ``--work-dir``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep import (LOADERS, MODELS, PRECISIONS, REPO, STAGES, BenchConfig,  # noqa: E402
                   Workload, free_port, grid, records, run_baseline, run_config, validate_choice)
from tables import bench_markdown, save_records  # noqa: E402

from gnnzero.data.options import LINK_LOADER_KINDS  # noqa: E402

SMOKE_CONFIGS = [BenchConfig("0", "fp32", 1, "cluster", "dense"),
                 BenchConfig("3", "bf16", 2, "cluster", "dense"),
                 BenchConfig("2", "fp32", 1, "full", "shared-lowrank")]


def cpu_moderate_plan() -> list[BenchConfig]:
    """Every ZeRO stage x {fp32, bf16} x {1, 2} ranks on Cluster-GCN, then every loader x model,
    then activation checkpointing on full-batch and Cluster-GCN (ZeRO-2 fp32, 1 rank)."""
    plan = grid(STAGES, ("fp32", "bf16"), (1, 2), ("cluster",), ("dense",), cuda=False)
    for config in grid(("2",), ("fp32",), (1,), LOADERS, MODELS, cuda=False):
        if config not in plan:
            plan.append(config)
    plan += grid(("2",), ("fp32",), (1,), ("full", "cluster"), ("dense",), cuda=False,
                 checkpointing=("on",))
    return plan


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="3 tiny configurations (< 3 min)")
    p.add_argument("--scaling", action="store_true", help="graph-size sweep (benchmarks/scaling.py)")
    p.add_argument("--paired", action="store_true",
                   help="alternated DeepSpeed / plain pairs per configuration, throughput "
                        "ratios (benchmarks/paired.py)")
    p.add_argument("--interleave", action="store_true",
                   help="--paired: start both runs of a pair together and train their epochs "
                        "in turn, one at a time (launch/train.py --take-turns)")
    p.add_argument("--repeats", type=int, default=4,
                   help="--paired: pairs per configuration (even: both orders alike)")
    p.add_argument("--extra", default="",
                   help="further launch/train.py flags for every run, e.g. "
                        "\"--prefetch-batches 0\"")
    p.add_argument("--plan", choices=["grid", "cpu-moderate"], default="grid",
                   help="grid = the cross product of the lists below")
    p.add_argument("--stages", type=_csv, default=list(STAGES))
    p.add_argument("--precisions", type=_csv, default=["fp32", "bf16", "fp16"],
                   help="fp16 is skipped without CUDA")
    p.add_argument("--worlds", type=_csv, default=["1", "2"])
    p.add_argument("--loaders", type=_csv, default=list(LOADERS))
    p.add_argument("--models", type=_csv, default=list(MODELS))
    p.add_argument("--checkpointing", type=_csv, default=["off"],
                   help="activation checkpointing: off, on or off,on")
    p.add_argument("--task", choices=["node", "link"], default=Workload.task,
                   help="link: launch/train.py --task link (loaders full, cluster, neighbor)")
    p.add_argument("--dataset", default=Workload.dataset)
    p.add_argument("--data-root", default=None)
    p.add_argument("--num-nodes", type=int, default=Workload.num_nodes)
    p.add_argument("--avg-degree", type=float, default=None)
    p.add_argument("--arch", default=Workload.arch)
    p.add_argument("--hidden", type=int, default=None,
                   help=f"default {Workload.hidden} (scaling: 64)")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lowrank-rank", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sizes", type=_csv, default=None, help="--scaling: node counts")
    p.add_argument("--tag", default=None, help="output name suffix (default: device type)")
    p.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench"))
    p.add_argument("--timeout", type=int, default=900, help="seconds per launch")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cuda = torch.cuda.is_available()
    tag = args.tag or ("smoke" if args.smoke else ("cuda" if cuda else "cpu"))
    results, work_dir = Path(args.results_dir), Path(args.work_dir) / tag
    results.mkdir(parents=True, exist_ok=True)
    if args.scaling:
        from scaling import run_scaling

        return run_scaling(args, tag, results, work_dir)
    try:
        validate_choice("stages", args.stages, STAGES)
        validate_choice("precisions", args.precisions, PRECISIONS)
        validate_choice("worlds", args.worlds, ("1", "2", "4", "8"))
        validate_choice("loaders", args.loaders,
                        LINK_LOADER_KINDS if args.task == "link" else LOADERS)
        validate_choice("models", args.models, MODELS)
        validate_choice("checkpointing", args.checkpointing, ("off", "on"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = Workload(args.dataset, args.data_root, args.num_nodes, args.avg_degree, args.arch,
                    args.hidden or Workload.hidden, args.layers, args.lowrank_rank, args.epochs,
                    args.batch_size, tuple(args.extra.split()), args.task)
    if args.smoke:
        configs = SMOKE_CONFIGS
        work = Workload(args.dataset, args.data_root, 1500, None, "sage", 32, 3, 8, 1, 300, (),
                        args.task)
    elif args.plan == "cpu-moderate":
        configs = cpu_moderate_plan()
    else:
        configs = grid(args.stages, args.precisions, args.worlds, args.loaders, args.models, cuda,
                       args.checkpointing)
    if args.paired:
        from paired import run_paired

        return run_paired(configs, work, args.repeats, tag, results, work_dir, args.timeout,
                          args.interleave)
    return sweep(configs, work, tag, results, work_dir, args.timeout)


def sweep(configs: list[BenchConfig], work: Workload, tag: str, results: Path, work_dir: Path,
          timeout: int) -> int:
    """Run the baselines and every configuration; write JSONL, markdown and PNG; print the table."""
    from plots import plot_memory_and_throughput

    work_dir.mkdir(parents=True, exist_ok=True)
    baselines, all_records, failed = {}, [], []
    pairs = sorted({(c.loader, c.model) for c in configs})
    bar = tqdm(total=len(pairs) + len(configs), desc="benchmark", dynamic_ncols=True)
    for loader, model in pairs:
        bar.set_postfix_str(f"baseline {loader}/{model}")
        metrics, log = run_baseline(BenchConfig(loader=loader, model=model), work, work_dir, timeout)
        baselines[(loader, model)] = metrics
        if metrics is None:
            failed.append((f"baseline_{loader}_{model}", log))
        else:
            for record in records(None, metrics, metrics, work):
                record.update(config=f"baseline_{loader}_{model}", loader=loader, model=model,
                              stage="plain", precision="fp32", world_size=1)
                all_records.append(record)
        bar.update(1)
    for config in configs:
        bar.set_postfix_str(config.name)
        metrics, log = run_config(config, work, work_dir, free_port(), timeout)
        if metrics is None:
            failed.append((config.name, log))
        else:
            all_records.extend(records(config, metrics, baselines.get((config.loader, config.model)),
                                       work))
        bar.update(1)
    bar.close()
    jsonl, md, png, env = save_records(results, f"bench_{tag}", all_records)
    header = (f"# Benchmark `{tag}`: {work.dataset} {work.num_nodes:,} nodes, {work.arch} "
              f"hidden {work.hidden} x {work.layers} layers, {work.epochs} epoch(s)\n\n"
              f"Device: {env.get('device', '?')}; torch {env.get('torch')}, PyG "
              f"{env.get('torch_geometric')}, DeepSpeed {env.get('deepspeed')}, commit "
              f"{env.get('git_commit')}.  Peak memory kind is named per row; see "
              f"benchmarks/README.md for how to read the ratios.")
    with open(md, "w", encoding="utf-8") as handle:
        handle.write(bench_markdown(all_records, header))
        if failed:
            handle.write("\nFailed: " + ", ".join(name for name, _ in failed) + "\n")
    if all_records:
        plot_memory_and_throughput(all_records, str(png),
                                   f"{tag}: per-rank memory breakdown and throughput "
                                   f"({env.get('device', '?')})")
    print(bench_markdown(all_records, f"summary ({len(configs)} configurations)"))
    for name, log in failed:
        print(f"FAILED {name}: see {log}", file=sys.stderr)
    print(f"wrote {jsonl}, {md}" + (f", {png}" if all_records else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
