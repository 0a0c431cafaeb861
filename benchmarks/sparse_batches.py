"""Sparse against dense feature batches on a real bag-of-words graph, through DeepSpeed.

    python benchmarks/sparse_batches.py --data-root ../shared/data/gnn_benchmark \\
        --out benchmarks/results/sparse_coauthor_cs

Each configuration (model x loader) runs ``launch/train.py`` on Coauthor CS (18,333
nodes, 6,805 binary features at 0.7 % density, Shchur et al.'s per-class split) under
ZeRO-2 on one rank, twice per seed: the sparse path (the default: batches carry x as a
torch CSR tensor) and the dense path (``--sparse-batch-density 0``: the same sparse
store, each batch densified, as before sparse batches existed).  The two runs of a pair
use the same seed (same split, weights and batches) and alternate their order.  Reported
per pair: batch bytes (the largest training batch as stored), epoch time (training only),
peak RSS, test accuracy (at the best-validation epoch, the headline, and at the last
epoch) and the step-time split; and the sparse/dense ratios.
Output: ``<out>.jsonl`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from sweep import REPO, _deepspeed_bin, _env, read_metrics, free_port, launch

sys.path.insert(0, str(REPO))
from gnnzero.observe.memory import format_bytes  # noqa: E402
from gnnzero.observe.report import markdown_table  # noqa: E402

MODELS, LOADERS = ("gcn", "sage"), ("full", "cluster")
PATHS = {"sparse": [], "dense": ["--sparse-batch-density", "0"]}


def flags(args, model: str, loader: str, seed: int, out: Path, path: str) -> list[str]:
    return ["--ds_config", "ds_configs/zero2.json", "--dataset", "coauthor-cs",
            "--data-root", str(args.data_root), "--model", model, "--hidden", str(args.hidden),
            "--layers", "2", "--loader", loader, "--epochs", str(args.epochs),
            "--eval-every", str(args.eval_every), "--seed", str(seed), "--output-dir", str(out),
            "--cache-dir", str(args.work / "cache"), "--no-checkpoint", *PATHS[path]]


def run_one(args, model: str, loader: str, seed: int, path: str) -> dict:
    out = args.work / f"{model}_{loader}_s{seed}_{path}"
    out.mkdir(parents=True, exist_ok=True)
    env = _env()
    env["OMP_NUM_THREADS"] = str(os.cpu_count())   # one rank: every core computes
    cmd = [_deepspeed_bin(), "--num_gpus", "1", "--master_port", str(free_port()),
           "launch/train.py", *flags(args, model, loader, seed, out, path)]
    code, _ = launch(cmd, out / "log.txt", args.timeout, env)
    metrics = read_metrics(out, code)
    if metrics is None:
        raise SystemExit(f"{out}/log.txt: the run failed (exit {code})")
    rank = metrics["memory"]["per_rank"][0]
    return {"model": model, "loader": loader, "seed": seed, "path": path,
            "batch_x_layout": rank["batch_x_layout"], "batch_bytes": rank["batch_bytes_peak"],
            "epoch_time_s": metrics["epoch_time_s"], "peak_rss_bytes": rank["peak_bytes"],
            "test_accuracy": metrics["test_accuracy"],
            "best_val_test_accuracy": (metrics["best_val"] or {}).get("test_accuracy"),
            "step_time_split_s": rank["step_time_split_s"],
            "feature_store_bytes": metrics["dataset"]["feature_store_bytes"],
            "environment": metrics["environment"]}


def _diff(pairs: list[dict], key: str) -> str:
    """Sparse minus dense accuracy per pair, in points: mean and standard error."""
    diffs = [100 * (p["sparse"][key] - p["dense"][key]) for p in pairs]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
    return f"{statistics.mean(diffs):+.2f} ± {se:.2f}"


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    for model in MODELS:
        for loader in LOADERS:
            pairs = {}
            for r in records:
                if (r["model"], r["loader"]) == (model, loader):
                    pairs.setdefault(r["seed"], {})[r["path"]] = r
            pairs = [p for p in pairs.values() if len(p) == 2]
            if not pairs:
                continue

            def mean(path, key):
                return statistics.mean(p[path][key] for p in pairs)
            validated = all(p[path].get("best_val_test_accuracy") is not None
                            for p in pairs for path in PATHS)
            rows.append({
                "model": model, "loader": loader, "seeds": len(pairs),
                "batch (sparse / dense)": f"{format_bytes(mean('sparse', 'batch_bytes'))} / "
                                          f"{format_bytes(mean('dense', 'batch_bytes'))}",
                "batch ratio": f"{mean('dense', 'batch_bytes') / mean('sparse', 'batch_bytes'):.0f}x",
                "epoch s (sparse / dense)": f"{mean('sparse', 'epoch_time_s'):.3f} / "
                                            f"{mean('dense', 'epoch_time_s'):.3f}",
                "speed-up": f"{statistics.mean(p['dense']['epoch_time_s'] / p['sparse']['epoch_time_s'] for p in pairs):.2f}x",
                "peak RSS (sparse / dense)": f"{format_bytes(mean('sparse', 'peak_rss_bytes'))} / "
                                             f"{format_bytes(mean('dense', 'peak_rss_bytes'))}",
                # runs validated only at the end (--eval-every = --epochs) have no best epoch
                "test acc at best val (sparse / dense)":
                    f"{100 * mean('sparse', 'best_val_test_accuracy'):.2f} / "
                    f"{100 * mean('dense', 'best_val_test_accuracy'):.2f}"
                    if validated else "-",
                "diff (points, mean ± s.e.)":
                    _diff(pairs, "best_val_test_accuracy") if validated else "-",
                "last-epoch test acc (sparse / dense)":
                    f"{100 * mean('sparse', 'test_accuracy'):.2f} / "
                    f"{100 * mean('dense', 'test_accuracy'):.2f}",
                "last-epoch diff": _diff(pairs, "test_accuracy"),
            })
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5,
                   help="validate every N epochs (the test accuracy at the best one is reported)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS)
    p.add_argument("--work", type=Path, default=Path("/tmp/gnnzero-sparse-bench"))
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/sparse_coauthor_cs")
    p.add_argument("--summarise", type=Path, nargs="+", default=None, metavar="JSONL",
                   help="write the report from these runs' records instead of running")
    args = p.parse_args(argv)
    if args.summarise:
        records = [json.loads(line) for path in args.summarise
                   for line in path.read_text().splitlines() if line.strip()]
        return report(records, args, argv)
    if not (args.data_root / "ms_academic_cs.npz").exists():
        raise SystemExit(f"--data-root {args.data_root} has no ms_academic_cs.npz")
    args.data_root = args.data_root.resolve()
    records = []
    for model in args.models:
        for loader in args.loaders:
            for i, seed in enumerate(args.seeds):
                order = ("sparse", "dense") if i % 2 == 0 else ("dense", "sparse")
                for path in order:
                    records.append(run_one(args, model, loader, seed, path))
                    print(json.dumps({k: records[-1][k] for k in
                                      ("model", "loader", "seed", "path", "batch_bytes",
                                       "epoch_time_s", "test_accuracy")}), flush=True)
    report(records, args, argv)


def report(records: list[dict], args, argv) -> None:
    """``<out>.jsonl`` (every run) and ``<out>.md`` (pairs summarised, step-time split)."""
    with open(f"{args.out}.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    env = records[0]["environment"]
    seeds = sorted({r["seed"] for r in records})
    rows = summarise(records)
    text = ("# Sparse vs dense feature batches: Coauthor CS, 1 rank, ZeRO-2\n\n"
            f"Device: {env['device']}; commit {env['git_commit']}; torch {env['torch']}, "
            f"DeepSpeed {env['deepspeed']}.\n"
            f"Command: `python benchmarks/sparse_batches.py {' '.join(argv or sys.argv[1:])}`\n"
            f"{args.epochs} epochs, validation every {args.eval_every}, hidden {args.hidden}, "
            f"2 layers, seeds {seeds} "
            f"(each a pair, order alternated); dense path = `--sparse-batch-density 0`. "
            f"Feature store: {format_bytes(records[0]['feature_store_bytes'])}.\n\n"
            + markdown_table(rows, list(rows[0])) + "\n\nStep-time split (s over all "
            f"epochs, seed {seeds[0]}):\n\n" + markdown_table(
                [{"model": r["model"], "loader": r["loader"], "path": r["path"],
                  **{k: f"{v:.2f}" for k, v in r["step_time_split_s"].items()}}
                 for r in records if r["seed"] == seeds[0]],
                ["model", "loader", "path", *records[0]["step_time_split_s"]]) + "\n")
    Path(f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
