"""Paired, alternated throughput runs: each configuration against the plain loop, in turn.

    python benchmarks/run.py --paired [--interleave] --stages 0,1,2,3 --worlds 1,2 --repeats 3 --epochs 60

Timings on a shared machine drift by tens of percent over minutes, so each
DeepSpeed run is paired with a plain run (``benchmarks/baseline.py``: the trainer's
loop through ``PlainEngine``, a plain ``torch.optim`` step, no prefetching; DDP on
several ranks) made right beside it, on the same batches and world size, and the
order inside a pair alternates (plain first, then DeepSpeed first, ...): on these
machines the second run of a pair is often slower, so an even number of pairs
balances that out.  The figure is the ratio of training throughput (train nodes/s
over the training seconds, which exclude start-up and the final evaluation) within
each pair; the table gives every ratio and their geometric mean (the headline) and
median.  Output: ``paired_<tag>.jsonl`` and ``paired_<tag>.md``.

With ``--interleave`` the two runs of a pair start together and take turns epoch by epoch
(``--take-turns``, :mod:`gnnzero.observe.turns`): only one trains at a time, the seat that
trains first alternates from pair to pair, and each run's training seconds cover its own
epochs only.  The machine's drift over minutes then falls on both runs alike; sequential
pairs (the default) keep it, and on these machines it moves one run's speed by up to 20 %.
"""
from __future__ import annotations

import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Optional

from gnnzero.observe.metrics import training_rate
from sweep import (BenchConfig, Workload, baseline_command, config_command, free_port,
                   launch_together, run_baseline, run_config, run_outcome)


def _throughput(metrics: Optional[dict]) -> Optional[float]:
    return None if metrics is None else training_rate(metrics)


def _record(config: BenchConfig, repeat: int, order: str, ds: Optional[dict],
            plain: Optional[dict]) -> dict:
    ds_rate, plain_rate = _throughput(ds), _throughput(plain)
    source = ds or plain or {}
    return {
        "config": config.name, "stage": config.stage, "precision": config.precision,
        "world_size": config.world_size, "loader": config.loader, "model": config.model,
        "repeat": repeat, "order": order,
        "deepspeed_train_nodes_per_s": ds_rate, "plain_train_nodes_per_s": plain_rate,
        "ratio": ds_rate / plain_rate if ds_rate and plain_rate else None,
        "deepspeed_train_seconds": ds and ds["train_seconds"],
        "plain_train_seconds": plain and plain["train_seconds"],
        "deepspeed_split_s": ds and ds["memory"]["per_rank"][0].get("step_time_split_s"),
        "plain_split_s": plain and plain["memory"]["per_rank"][0].get("step_time_split_s"),
        "environment": source.get("environment", {}),
    }


def _one_after_the_other(config: BenchConfig, work: Workload, out: Path, sides: tuple[str, str],
                         timeout: int) -> dict[str, tuple[Optional[dict], str]]:
    runs = {}
    for side in sides:
        runs[side] = (run_baseline(config, work, out, timeout) if side == "plain"
                      else run_config(config, work, out, free_port(), timeout))
    return runs


def _in_turns(config: BenchConfig, work: Workload, out: Path, sides: tuple[str, str],
              timeout: int) -> dict[str, tuple[Optional[dict], str]]:
    """Both runs at once, taking turns epoch by epoch; ``sides[0]`` trains first."""
    out.mkdir(parents=True, exist_ok=True)
    turns = out / "turns.json"
    for stale in out.glob("turns.json*"):
        stale.unlink()
    ports = [free_port()]
    while len(ports) < 2:
        port = free_port()
        if port not in ports:
            ports.append(port)
    commands, run_dirs = [], []
    for seat, (side, port) in enumerate(zip(sides, ports)):
        build = baseline_command if side == "plain" else config_command
        cmd, run_dir = build(config, work, out, port, ("--take-turns", f"{turns}:{seat}"))
        commands.append((cmd, run_dir / "log.txt"))
        run_dirs.append(run_dir)
    codes = launch_together(commands, timeout)
    return {side: run_outcome(run_dir, code)
            for side, run_dir, (code, _) in zip(sides, run_dirs, codes)}


def run_paired(configs: list[BenchConfig], work: Workload, repeats: int, tag: str,
               results: Path, work_dir: Path, timeout: int, interleave: bool = False) -> int:
    """``repeats`` alternated pairs per configuration (run in turns, epoch by epoch, with
    ``interleave``); write JSONL and markdown."""
    records, failed = [], []
    pair = _in_turns if interleave else _one_after_the_other
    for config in configs:
        for repeat in range(repeats):
            plain_first = repeat % 2 == 0
            out = work_dir / f"{config.name}_r{repeat}"
            sides = ("plain", "deepspeed") if plain_first else ("deepspeed", "plain")
            done = pair(config, work, out, sides, timeout)
            runs = {side: metrics for side, (metrics, _) in done.items()}
            failed += [f"{config.name} r{repeat} {side}: {log}"
                       for side, (metrics, log) in done.items() if metrics is None]
            record = _record(config, repeat, "plain first" if plain_first else "deepspeed first",
                             runs["deepspeed"], runs["plain"])
            records.append(record)
            ratio = record["ratio"]
            print(f"{config.name} r{repeat}: "
                  f"{'failed' if ratio is None else f'{ratio:.3f}x'} "
                  f"({record['deepspeed_train_seconds'] or 0:.1f} s vs "
                  f"{record['plain_train_seconds'] or 0:.1f} s)", flush=True)
    results.mkdir(parents=True, exist_ok=True)
    jsonl, md = results / f"paired_{tag}.jsonl", results / f"paired_{tag}.md"
    with open(jsonl, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    md.write_text(paired_markdown(records, work, tag, interleave), encoding="utf-8")
    print(md.read_text(encoding="utf-8"))
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


def paired_markdown(records: list[dict], work: Workload, tag: str,
                    interleave: bool = False) -> str:
    env = next((r["environment"] for r in records if r["environment"]), {})
    lines = [f"# Paired throughput `{tag}`: DeepSpeed over the plain loop, same batches",
             "",
             f"Workload: {work.dataset} {work.num_nodes:,} nodes, {work.arch} hidden "
             f"{work.hidden} x {work.layers} layers, {work.epochs} epochs per run"
             + (f", extra flags `{' '.join(work.extra)}`" if work.extra else "") + ".",
             f"Device: {env.get('device', '?')}; torch {env.get('torch')}, DeepSpeed "
             f"{env.get('deepspeed')}, commit {env.get('git_commit')}.",
             f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
             "",
             "Ratio = DeepSpeed train nodes/s over the plain run's, within each alternated "
             "pair (training seconds only)"
             + (": the two runs of a pair started together and trained their epochs in "
                "turn (`--interleave`), one at a time." if interleave else
                ": the two runs of a pair one after the other."),
             "",
             "| config | ratios per pair (plain first, DeepSpeed first, ...) | geometric mean / "
             "median | DeepSpeed train s | plain train s |",
             "|---|---|---|---|---|"]
    by_config: dict[str, list[dict]] = {}
    for record in records:
        by_config.setdefault(record["config"], []).append(record)
    for name, group in by_config.items():
        ratios = [r["ratio"] for r in group if r["ratio"] is not None]
        summary = (f"**{statistics.geometric_mean(ratios):.2f}x** / "
                   f"{statistics.median(ratios):.2f}x" if ratios else "failed")
        ds_s = [r["deepspeed_train_seconds"] for r in group if r["deepspeed_train_seconds"]]
        plain_s = [r["plain_train_seconds"] for r in group if r["plain_train_seconds"]]
        lines.append(f"| {name} | {' / '.join(f'{x:.2f}' for x in ratios)} | {summary} | "
                     f"{' / '.join(f'{x:.1f}' for x in ds_s)} | "
                     f"{' / '.join(f'{x:.1f}' for x in plain_s)} |")
    return "\n".join(lines) + "\n"
