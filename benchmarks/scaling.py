"""Scaling sweep: peak memory and epoch time against graph size, full-batch vs Cluster-GCN vs GraphSAINT.

Run through ``python benchmarks/run.py --scaling [--sizes 10000,100000,1000000]``.  Each
(size, loader) trains one epoch of a 2-layer GCN in its own process (``python
launch/train.py``: one rank, ZeRO stage 0 fp32, since the question here is
what the loader puts in memory, not how ZeRO splits the model states).  Writes
``scaling_<tag>.jsonl``, ``.md`` and a log-log ``.png``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from sweep import BenchConfig, Workload, _env, free_port, launch, records, train_flags
from tables import SCALING_COLUMNS, growth_verdict, save_records, scaling_rows

DEFAULT_SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
SCALING_LOADERS = ("full", "cluster", "saint-rw")


def run_scaling(args, tag: str, results: Path, work_dir: Path) -> int:
    from plots import plot_scaling
    from gnnzero.observe.report import markdown_table

    sizes = [int(float(s)) for s in (args.sizes or DEFAULT_SIZES)]
    # One workload for all sizes: GCN applies its weight before propagating, so messages are
    # hidden-wide, and a sparse average degree keeps the 1e6-node full batch within RAM.
    degree = args.avg_degree if args.avg_degree is not None else 4.0
    hidden = args.hidden or 64
    runs = [(n, loader) for n in sizes for loader in SCALING_LOADERS]
    out, failed = [], []
    work_dir.mkdir(parents=True, exist_ok=True)
    for num_nodes, loader in tqdm(runs, desc="scaling", dynamic_ncols=True):
        work = Workload(args.dataset, args.data_root, num_nodes, degree, "gcn", hidden, 2,
                        epochs=1, batch_size=2000,
                        extra=("--sample-coverage", "5", "--dropout", "0.0"))
        config = BenchConfig("0", "fp32", 1, loader, "dense")
        run_dir = work_dir / f"scaling_{loader}_{num_nodes}"
        run_dir.mkdir(parents=True, exist_ok=True)
        env = _env()
        env["MASTER_PORT"] = str(free_port())
        code, _ = launch([sys.executable, "launch/train.py",
                          *train_flags(config, work, run_dir, work_dir / "cache")],
                         run_dir / "log.txt", args.timeout, env)
        path = run_dir / "metrics.json"
        if code != 0 or not path.exists():
            failed.append(f"{loader}@{num_nodes} (exit {code}, {run_dir / 'log.txt'})")
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        for record in records(config, metrics, None, work):
            record["training_rss_increment_bytes"] = max(
                0, (record.get("host_step_peak_rss_bytes") or 0)
                - (record.get("rss_at_train_start_bytes") or 0))
            out.append(record)
    _, md, png, env = save_records(results, f"scaling_{tag}", out)
    verdict = growth_verdict(out)
    rss_verdict = growth_verdict(out, "training_rss_increment_bytes")
    text = (f"# Scaling `{tag}`: synthetic graphs, 2-layer GCN hidden {hidden}, avg degree "
            f"{degree:g}, 1 epoch, one rank\n\nDevice: {env.get('device', '?')}; commit "
            f"{env.get('git_commit')}.  *Working set* = model states + activations saved for "
            f"backward + batch tensors (what would sit on a GPU); *peak RSS* is the whole "
            f"process (dataset in RAM included).\n\n"
            f"{markdown_table(scaling_rows(out), SCALING_COLUMNS)}\n\n"
            f"Working-set growth, smallest to largest graph:\n" + "\n".join(verdict) +
            "\n\nGrowth of the peak RSS inside a training step above the RSS at train start:\n" + "\n".join(rss_verdict) + "\n")
    if failed:
        text += "\nFailed: " + "; ".join(failed) + "\n"
    md.write_text(text, encoding="utf-8")
    if out:
        plot_scaling(out, str(png), f"{tag}: memory and epoch time vs graph size "
                                    f"({env.get('device', '?')})")
    print(text)
    return 1 if failed else 0
