"""The accuracy matrix: do the memory-saving paths keep the plain path's accuracy?

``--matrix`` trains GraphSAGE on Coauthor CS through DeepSpeed (``gnnzero.run.run`` in this
process, a world of one) in every cell of ZeRO 0/2/3 x fp32/bf16 x loader (full, cluster,
saint-rw, neighbor) x model (dense 2 x 64, or 4 x 64 with rank-16 low-rank and shared
hidden layers), over seeds (each its own 20 / 30 per class split).  Each cell's test
accuracy at the best-validation epoch is set beside

* the full-batch fp32 ZeRO-0 figure of the same model (the plain path), and
* fp32 ZeRO-0 on the same loader (what ZeRO and precision alone change: goal 1 point),
* full batch at the same stage and precision (what sampling alone changes: goal 2 points),

as paired differences by seed with their standard errors.  Every run is appended to
``OUT.jsonl`` as it finishes and a rerun skips the runs already there, so the matrix can be
filled over several sessions; ``OUT.md`` is rewritten from all of them.  Slices:
``--stages 0,3 --precisions fp32 --loaders full,cluster --models dense``.

    .venv/bin/python benchmarks/accuracy.py --matrix   # benchmarks/results/accuracy_matrix.{jsonl,md}
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.cora_accuracy import one_run, write_ds_config  # noqa: E402

STAGES, PRECISIONS = (0, 2, 3), ("fp32", "bf16")
LOADERS = {"full": [], "cluster": ["--clusters-per-batch", "4"], "saint-rw": [],
           "neighbor": ["--batch-size", "1024"]}
# Not in the matrix: the same loaders with a wider receptive field, for the deep model's
# diagnosis (``--loaders cluster-16,saint-rw-4``); the label before the last '-' is the loader.
VARIANTS = {"cluster-16": ["--clusters-per-batch", "16"], "saint-rw-4": ["--walk-length", "4"]}
LOADER_FLAGS = {name: ["--loader", name.rsplit("-", 1)[0] if name in VARIANTS else name, *extra]
                for name, extra in {**LOADERS, **VARIANTS}.items()}
MODELS = {"dense": ["--model", "sage", "--hidden", "64", "--layers", "2"],
          "shared+low-rank": ["--model", "sage", "--hidden", "64", "--layers", "4", "--rank",
                              "16", "--share-weights"]}
GOAL_STAGE_POINTS, GOAL_LOADER_POINTS = 1.0, 2.0
Cell = tuple  # (stage, precision, loader, model)


def cell_key(row: dict) -> Cell:
    return row["stage"], row["precision"], row["loader"], row["model"]


def paired(rows: dict[Cell, dict[int, float]], cell: Cell, ref: Cell) -> dict | None:
    """Mean and standard error of ``cell - ref`` in points over the seeds both ran."""
    a, b = rows.get(cell, {}), rows.get(ref, {})
    gaps = [100 * (a[s] - b[s]) for s in sorted(set(a) & set(b))]
    if not gaps:
        return None
    se = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("nan")
    return {"mean": statistics.fmean(gaps), "se": se, "seeds": len(gaps)}


def _gap(gap: dict | None, goal: float | None = None) -> str:
    if gap is None:
        return "–"
    text = f"{gap['mean']:+.2f} ± {gap['se']:.2f}"
    return text if goal is None else f"{text} {'ok' if abs(gap['mean']) <= goal else 'MISS'}"


def markdown(all_rows: list[dict], args: argparse.Namespace) -> str:
    by_cell: dict[Cell, dict[int, float]] = {}
    for row in all_rows:
        by_cell.setdefault(cell_key(row), {})[row["seed"]] = row["test_accuracy"]
    lines = ["# Accuracy matrix: Coauthor CS, GraphSAGE, through DeepSpeed", "",
             f"Test accuracy at the best-validation epoch (validated every 5 of {args.epochs} "
             f"epochs), mean over the seeds run; 20 / 30 per class split drawn per seed; Adam "
             f"with L2 decay 5e-4, lr 0.01, dropout 0.5. Differences are paired by seed, in "
             f"points, ± their standard error (nan with one seed). Goals: ZeRO stage and "
             f"precision within {GOAL_STAGE_POINTS:g} point of fp32 ZeRO-0 on the same loader; "
             f"a sampled loader within {GOAL_LOADER_POINTS:g} points of full batch at the same "
             f"stage and precision.", "",
             "| model | loader | ZeRO | precision | seeds | test acc. | vs plain path (full, "
             "fp32, ZeRO-0) | vs fp32 ZeRO-0, same loader | vs full batch, same engine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, loader, stage, precision in itertools.product(MODELS, LOADER_FLAGS, STAGES,
                                                             PRECISIONS):
        cell = (stage, precision, loader, model)
        accs = by_cell.get(cell)
        if not accs:
            continue
        plain = (0, "fp32", "full", model)
        same_loader = (0, "fp32", loader, model)
        same_engine = (stage, precision, "full", model)
        lines.append(
            f"| {model} | {loader} | {stage} | {precision} | {len(accs)} | "
            f"{100 * statistics.fmean(accs.values()):.2f} | "
            f"{_gap(paired(by_cell, cell, plain)) if cell != plain else 'reference'} | "
            f"{_gap(paired(by_cell, cell, same_loader), GOAL_STAGE_POINTS) if cell != same_loader else '–'} | "
            f"{_gap(paired(by_cell, cell, same_engine), GOAL_LOADER_POINTS) if loader != 'full' else '–'} |")
    if any(row["loader"] in VARIANTS for row in all_rows):
        lines += ["", "Rows `cluster-16` (16 METIS parts a batch instead of 4) and `saint-rw-4` "
                      "(random walks of length 4 instead of 2) are not matrix cells: they widen "
                      "the batches' receptive field, to tell whether a sampled loader's gap comes "
                      "from the subgraph cutting a deep model's neighbourhood."]
    env = all_rows[-1]["environment"]
    commits = sorted({r["environment"].get("git_commit") for r in all_rows})
    lines += ["", f"{len(all_rows)} runs; device {env['device']}; torch {env['torch']}, "
              f"deepspeed {env['deepspeed']}; commits {', '.join(map(str, commits))}.", "",
              f"Command: `.venv/bin/python benchmarks/accuracy.py --matrix` (this file's "
              f"slice: `{' '.join(args.slice_flags)}`)", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", action="store_true", help="run the matrix (or a slice)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--stages", default=",".join(map(str, STAGES)))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--loaders", default=",".join(LOADERS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" /
                                                   "gnn_benchmark"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" /
                                             "accuracy_matrix"))
    args = parser.parse_args(argv)
    if not args.matrix:
        parser.error("nothing to do: pass --matrix (with slice flags to run part of it)")
    args.slice_flags = [f"--{k} {getattr(args, k)}" for k in ("stages", "precisions",
                                                               "loaders", "models", "seeds",
                                                               "epochs")]
    stages = [int(s) for s in args.stages.split(",")]
    precisions, loaders = args.precisions.split(","), args.loaders.split(",")
    models = args.models.split(",")
    bad = ([s for s in stages if s not in STAGES] + [p for p in precisions if p not in PRECISIONS]
           + [x for x in loaders if x not in LOADER_FLAGS] + [m for m in models if m not in MODELS])
    if bad:
        parser.error(f"unknown cell values {bad}")
    os.environ.setdefault("MASTER_PORT", str(29600 + os.getpid() % 300))
    out = Path(args.out)
    jsonl = out.with_suffix(".jsonl")
    done = [json.loads(line) for line in jsonl.read_text().splitlines()] \
        if jsonl.exists() else []
    have = {(*cell_key(r), r["seed"]) for r in done if r["epochs"] == args.epochs}
    work = Path(tempfile.mkdtemp(prefix="accuracy_matrix_"))
    ds_config = write_ds_config(REPO / "ds_configs" / "zero0.json", "adam",
                                work / "ds_config.json")
    common = ["--ds_config", str(ds_config), "--dataset", "coauthor-cs", "--data-root",
              args.data_root, "--epochs", str(args.epochs), "--weight-decay", "5e-4",
              "--lr", "0.01", "--dropout", "0.5", "--no-checkpoint", "--eval-every", "5",
              "--cache-dir", str(work / "cache")]
    # Seeds outermost, so a partial matrix has every cell at the first seeds.
    for seed, model, loader, stage, precision in itertools.product(
            range(args.seeds), models, loaders, stages, precisions):
        if (stage, precision, loader, model, seed) in have:
            continue
        flags = [*MODELS[model], *LOADER_FLAGS[loader], "--zero-stage",
                 str(stage), "--precision", precision]
        result = one_run(flags, [*common, "--output-dir", str(work / "run")], seed,
                         work / "run.log")
        row = {"stage": stage, "precision": precision, "loader": loader, "model": model,
               "seed": seed, "epochs": args.epochs, "flags": flags, **result}
        with open(jsonl, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        done.append(row)
        print(f"{model} {loader} ZeRO-{stage} {precision} seed {seed}: "
              f"{100 * row['test_accuracy']:.2f}", flush=True)
        out.with_suffix(".md").write_text(markdown([r for r in done
                                                    if r["epochs"] == args.epochs], args))


if __name__ == "__main__":
    main()
