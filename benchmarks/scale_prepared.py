"""Scale check on a prepared directory: prepare once, then one training epoch (Cluster-GCN by
default, or ``--loader neighbor`` / ``saint-rw``, which need no METIS: ``--num-parts 0``) plus
the exact (layer-wise) final evaluation on 1 and on N ranks, with every rank mapping the same
files.

A monitor samples every rank process (children of the DeepSpeed launcher) every 0.2 s:
private anonymous memory (``RssAnon`` from ``/proc/PID/status``), unique memory (USS =
private clean + dirty) and proportional memory (PSS, shared pages split between the
processes mapping them) from ``/proc/PID/smaps_rollup``, and the machine-wide memory in
use (``MemTotal - MemAvailable``, so reclaimable file pages do not count).  RSS is not
reported as a total: mapped pages count in every process's RSS.

    .venv/bin/python benchmarks/scale_prepared.py --name products      # ogbn-products shape
    .venv/bin/python benchmarks/scale_prepared.py --num-nodes 100000 --name quick
    .venv/bin/python benchmarks/scale_prepared.py --name doubling --num-nodes 5000000 \
        --avg-degree 20 --loader neighbor --num-parts 0 --ranks 1       # the doubling series

Appends one JSON line per run to ``benchmarks/results/scale_<name>.jsonl`` and rewrites
``scale_<name>.md``.  Run it alone: it is the machine's memory it measures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GIB = 1024 ** 3
# ogbn-products: 2,449,029 nodes, 61,859,140 undirected edges, 100 features, 47 classes.
PRODUCTS = {"num_nodes": 2_449_029, "avg_degree": 2 * 61_859_140 / 2_449_029,
            "num_features": 100, "num_classes": 47}


def _kib(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    try:
        with open(path) as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in keys:
                    out[name] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def machine_used() -> int:
    info = _kib("/proc/meminfo", ("MemTotal", "MemAvailable"))
    return info["MemTotal"] - info["MemAvailable"]


def _descendants(pid: int) -> list[int]:
    children, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                kids = [int(k) for k in handle.read().split()]
        except FileNotFoundError:
            kids = []
        children += kids
        frontier += kids
    return children


class Monitor(threading.Thread):
    """Peak per-process RssAnon / USS / PSS of the processes running ``marker``, the peak
    of their summed PSS, and the machine-wide peak above the starting level."""

    def __init__(self, root_pid: int, marker: str, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.marker, self.interval = root_pid, marker, interval
        self.baseline = machine_used()
        self.peaks: dict[int, dict[str, int]] = {}
        self.total_pss_peak = self.machine_peak = 0
        self.stop = threading.Event()

    def _is_worker(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except FileNotFoundError:
            return False
        return self.marker in cmd

    def sample(self) -> None:
        total = 0
        for pid in [self.root] + _descendants(self.root):
            if not self._is_worker(pid):
                continue
            roll = _kib(f"/proc/{pid}/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty",
                                                      "Rss"))
            status = _kib(f"/proc/{pid}/status", ("RssAnon", "RssFile", "RssShmem"))
            if "Pss" not in roll:
                continue
            now = {"pss": roll["Pss"], "uss": roll["Private_Clean"] + roll["Private_Dirty"],
                   "rss": roll["Rss"], **{k.lower(): v for k, v in status.items()}}
            peak = self.peaks.setdefault(pid, {})
            for key, value in now.items():
                peak[key] = max(peak.get(key, 0), value)
            total += now["pss"]
        self.total_pss_peak = max(self.total_pss_peak, total)
        self.machine_peak = max(self.machine_peak, machine_used() - self.baseline)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(self.interval)


def monitored(cmd: list[str], marker: str, log: Path, interval: float = 0.2,
              env: dict | None = None) -> tuple[float, Monitor, int]:
    """Run ``cmd`` (output to ``log``) under a :class:`Monitor`; seconds, monitor, exit code."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})
        monitor = Monitor(proc.pid, marker, interval)
        monitor.start()
        code = proc.wait()
    monitor.stop.set()
    monitor.join()
    return time.perf_counter() - start, monitor, code


def _tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def prepare(args, work: Path, shape: dict) -> dict:
    out = work / "prepared"
    cmd = [sys.executable, "-m", "gnnzero.prepare", "--dataset", "synthetic", "--out", str(out),
           "--num-nodes", str(shape["num_nodes"]), "--avg-degree", str(shape["avg_degree"]),
           "--num-features", str(shape["num_features"]), "--num-classes",
           str(shape["num_classes"]), "--words-per-node", str(args.words_per_node),
           "--feature-store", args.feature_layout, "--feature-dtype", args.feature_dtype]
    if args.num_parts:
        cmd += ["--num-parts", str(args.num_parts)]
    seconds, monitor, code = monitored(cmd, "gnnzero.prepare", work / "prepare.log")
    if code:
        return {"phase": "prepare", "failed": _tail(work / "prepare.log"), "seconds": seconds}
    manifest = json.loads((out / "manifest.json").read_text())
    peak = max(monitor.peaks.values(), key=lambda p: p.get("rssanon", 0))
    return {"phase": "prepare", "seconds": round(seconds, 1), "dir": str(out),
            "dir_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
            "num_nodes": manifest["num_nodes"], "num_edges_directed": manifest["num_edges"],
            "num_features": manifest["num_features"], "num_classes": manifest["num_classes"],
            "features": manifest["features"], "num_parts": args.num_parts,
            "peak_rss_anon": peak.get("rssanon"), "machine_peak": monitor.machine_peak}


def train(args, work: Path, prepared: dict, ranks: int) -> dict:
    run_dir = work / f"run{ranks}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks),
           "launch/train.py", "--ds_config", "ds_configs/zero2.json", "--dataset",
           prepared["dir"], "--loader", args.loader, "--epochs", "1",
           "--eval-every", "2", "--model", args.arch, "--hidden", str(args.hidden),
           "--layers", str(args.layers), "--no-checkpoint", "--output-dir", str(run_dir)]
    cmd += LOADER_FLAGS[args.loader](args)
    seconds, monitor, code = monitored(cmd, "launch/train.py --local_rank", work / f"train{ranks}.log")
    record = {"phase": "train", "ranks": ranks, "wall_s": round(seconds, 1)}
    if code:
        record["failed"] = _tail(work / f"train{ranks}.log")
        return record
    metrics = json.loads((run_dir / "metrics.json").read_text())
    per_rank = sorted(monitor.peaks.values(), key=lambda p: -p.get("pss", 0))
    record.update({
        "epoch_s": round(metrics["epoch_time_s"], 1), "load_s": round(metrics["load_seconds"], 1),
        "test_accuracy": metrics["test_accuracy"],
        "final_method": metrics["evaluation"]["test"].get("method"),
        "per_rank_peak": [{k: p.get(k) for k in ("rssanon", "uss", "pss", "rss")}
                          for p in per_rank],
        "total_pss_peak": monitor.total_pss_peak, "machine_peak": monitor.machine_peak})
    return record


LOADER_FLAGS = {
    "cluster": lambda a: ["--num-parts", str(a.num_parts), "--clusters-per-batch",
                          str(a.clusters_per_batch)],
    "neighbor": lambda a: ["--batch-size", str(a.batch_size), "--num-neighbors", a.num_neighbors],
    "saint-rw": lambda a: ["--batch-size", str(a.batch_size)],
}


def _row(r: dict) -> str:
    g = lambda v: f"{v / GIB:.2f}" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    if r.get("failed"):
        return f"| {r.get('ranks', '-')} | failed: {r['failed'][:200]} | | | | | | |"
    ranks = r["per_rank_peak"]
    return (f"| {r['ranks']} | {r.get('epoch_s')} | {r['wall_s']} | {r['test_accuracy']:.4f} | "
            + " / ".join(g(p['rssanon']) for p in ranks) + " | "
            + " / ".join(g(p['uss']) for p in ranks) + " | "
            + " / ".join(g(p['pss']) for p in ranks)
            + f" | {g(r['total_pss_peak'])} | {g(r['machine_peak'])} |")


def write_markdown(path: Path, records: list[dict]) -> None:
    lines = [f"# {path.stem}", "",
             "Written by `benchmarks/scale_prepared.py`; CPU only (no GPU), 2 cores, 24 GiB. "
             "Memory in GiB, peaks over the run sampled every 0.2 s; PSS splits the mapped "
             "graph's shared pages between the ranks.", ""]
    for record in records:
        env = record["environment"]
        prep = record["prepare"]
        lines += [f"## {prep.get('num_nodes')} nodes, {prep.get('num_edges_directed')} directed "
                  f"edges ({env['date']}, commit {env['commit']})", "",
                  f"Command: `{env['command']}`", ""]
        if env.get("notes"):
            lines += [f"Notes: {env['notes']}", ""]
        if prep.get("failed"):
            lines += [f"prepare failed after {prep['seconds']:.0f} s: {prep['failed']}", ""]
            continue
        lines += [f"Prepare: {prep['seconds']} s, directory {prep['dir_bytes'] / GIB:.2f} GiB "
                  f"(features {prep['features']}), peak RssAnon "
                  f"{prep['peak_rss_anon'] / GIB:.2f} GiB, "
                  + (f"METIS {prep['num_parts']} parts" if prep['num_parts'] else "no METIS")
                  + f"; training loader {record['args'].get('loader', 'cluster')}.", "",
                  "| ranks | epoch s | wall s | test acc | RssAnon per rank | USS per rank | "
                  "PSS per rank | total PSS | machine-wide |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [_row(r) for r in record["runs"]]
        ok = [r for r in record["runs"] if not r.get("failed")]
        if len(ok) >= 2:
            lines += ["", f"Total PSS, {ok[-1]['ranks']} ranks / 1 rank: "
                          f"{ok[-1]['total_pss_peak'] / ok[0]['total_pss_peak']:.2f}x"]
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="products")
    parser.add_argument("--num-nodes", type=int, default=PRODUCTS["num_nodes"])
    parser.add_argument("--avg-degree", type=float, default=PRODUCTS["avg_degree"])
    parser.add_argument("--num-features", type=int, default=PRODUCTS["num_features"])
    parser.add_argument("--num-classes", type=int, default=PRODUCTS["num_classes"])
    parser.add_argument("--words-per-node", type=float, default=8.0)
    parser.add_argument("--feature-layout", default="dense", choices=("dense", "sparse"))
    parser.add_argument("--feature-dtype", default="float16")
    parser.add_argument("--num-parts", type=int, default=1000)
    parser.add_argument("--clusters-per-batch", type=int, default=8)
    parser.add_argument("--loader", default="cluster", choices=sorted(LOADER_FLAGS))
    parser.add_argument("--batch-size", type=int, default=4096,
                        help="neighbour seeds or random-walk roots per batch")
    parser.add_argument("--num-neighbors", default="10,5", help="fan-out per layer (neighbor)")
    parser.add_argument("--arch", default="sage")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--work", default=str(REPO / ".cache" / "scale"))
    args = parser.parse_args(argv)
    work = Path(args.work) / f"{args.name}-{args.num_nodes}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shape = {"num_nodes": args.num_nodes, "avg_degree": args.avg_degree,
             "num_features": args.num_features, "num_classes": args.num_classes}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    record = {"environment": {"device": "CPU (2 cores, 24 GiB, no GPU)", "commit": commit,
                              "date": time.strftime("%Y-%m-%d"),
                              "command": "python benchmarks/scale_prepared.py "
                                         + " ".join(argv if argv is not None else sys.argv[1:])},
              "args": vars(args)}
    record["prepare"] = prepare(args, work, shape)
    print(json.dumps(record["prepare"]), flush=True)
    record["runs"] = []
    if not record["prepare"].get("failed"):
        for ranks in (int(r) for r in args.ranks.split(",")):
            run = train(args, work, record["prepare"], ranks)
            print(json.dumps(run), flush=True)
            record["runs"].append(run)
    RESULTS.mkdir(parents=True, exist_ok=True)
    jsonl = RESULTS / f"scale_{args.name}.jsonl"
    with open(jsonl, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    write_markdown(RESULTS / f"scale_{args.name}.md", records)
    if not os.environ.get("GNNZERO_KEEP_SCALE_WORK"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
