"""Python glue of ``benchmarks/gpu_check.sh`` (see there and benchmarks/README.md, "GPU check").

    python benchmarks/gpu_check.py env --out-json W/env.json   # device, driver, versions; fails
                                                              # without CUDA (outside a dry run)
    python benchmarks/gpu_check.py build-ops                  # FusedAdam, JIT-built once
    python benchmarks/gpu_check.py torch-adam --backup DIR    # fallback: ds_configs use torch AdamW
    python benchmarks/gpu_check.py report --work W --results R [--out O]

``report`` reads what the sweeps wrote (``benchmarks/run.py``'s ``bench_<tag>.jsonl``; for a
sweep cut short, the records of the runs that finished, built by ``sweep.records`` from their
``metrics.json``) and writes ``R/bench_gpu.md``: the device, the commit, the command, each
part's time, a GPU table per workload (``cuda_max_allocated`` peak, measured/formula model
states, throughput against the plain loop), fp16 loss scaling and the failed runs.  It never
recomputes a figure.  With ``--out`` the results, the log and the runs' logs go there too.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

PARTS = {"gpu": "Cluster-GCN, fp32 / bf16 / fp16 x ZeRO 0-3, one GPU",
         "gpu_products": "products-shaped prepared graph, Cluster-GCN, one GPU"}
DS_CONFIGS = ("zero0.json", "zero1.json", "zero2.json", "zero3.json")
RUN_NAME = re.compile(r"^z(?P<stage>\d)(?P<offload>offload)?_(?P<precision>fp32|bf16|fp16)_"
                      r"w(?P<world>\d+)_(?P<loader>[a-z-]+)_(?P<model>dense|shared-lowrank)"
                      r"(?P<ckpt>_ckpt)?$")


# ---------------------------------------------------------------- env / build-ops / torch-adam

def commit_label() -> str:
    """The checkout's commit: git where there is a .git, else .whl/COMMIT (make gpu-wheels)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=REPO, text=True, capture_output=True, timeout=5).stdout
            return out.stdout.strip() + (" + uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    stamp = REPO / ".whl" / "COMMIT"
    return stamp.read_text().strip() + " (from .whl/COMMIT)" if stamp.exists() else "unknown"


def _version(module: str) -> str:
    """``module``'s distribution version, once it imports (from where: the carried wheels?)."""
    import importlib
    import importlib.metadata

    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 -- a missing or broken package is the finding
        return f"unavailable ({type(exc).__name__}: {exc})"[:200]
    try:
        version = importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        version = getattr(imported, "__version__", "?")
    where = Path(getattr(imported, "__file__", None) or "?").parent.parent
    return f"{version} ({where})" if str(where).startswith("/tmp/site") else version


def environment(dry: bool) -> dict[str, Any]:
    import platform

    import torch
    import torch_geometric.typing as pyg_typing

    env: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit_label(),
        "python": platform.python_version(), "executable": sys.executable,
        "cpus": os.cpu_count(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "dry_run": dry,
        **{name: _version(name) for name in ("torch_geometric", "deepspeed", "pymetis", "numpy",
                                             "scipy", "pydantic")},
        "with_torch_sparse": pyg_typing.WITH_TORCH_SPARSE,
        "with_torch_scatter": pyg_typing.WITH_TORCH_SCATTER,
        "with_pyg_lib": pyg_typing.WITH_PYG_LIB,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), capability=".".join(
            map(str, torch.cuda.get_device_capability(0))), device_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], text=True, capture_output=True,
                                 timeout=20)
            env["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia_smi"] = f"unavailable ({exc})"
    else:
        env["device"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores; dry run)" if dry \
            else "no CUDA device"
    try:
        from deepspeed.accelerator import get_accelerator

        env["deepspeed_accelerator"] = get_accelerator()._name
    except Exception as exc:  # noqa: BLE001
        env["deepspeed_accelerator"] = f"unavailable ({exc})"[:200]
    return env


def cmd_env(args) -> int:
    dry = os.environ.get("GPU_CHECK_DRY_RUN") == "1"
    env = environment(dry)
    Path(args.out_json).write_text(json.dumps(env, indent=1))
    for key, value in env.items():
        print(f"{key:>22}: {value}")
    problems = [name for name in ("deepspeed", "pymetis", "torch_geometric")
                if str(env[name]).startswith("unavailable")]
    import importlib.metadata

    for dist in args.require:  # every DeepSpeed requirement, carried or in the image
        try:
            env.setdefault("distributions", {})[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"distribution {dist}")
    if args.require:
        print(f"{'distributions':>22}: " + ", ".join(
            f"{k} {v}" for k, v in env.get("distributions", {}).items()))
        Path(args.out_json).write_text(json.dumps(env, indent=1))
    if not dry and not env["cuda_available"]:
        problems.append("CUDA (torch.cuda.is_available() is False)")
    if not dry and env["deepspeed_accelerator"] != "cuda":
        problems.append(f"DeepSpeed accelerator {env['deepspeed_accelerator']!r}, not cuda")
    import gnnzero  # noqa: F401 -- the package itself, through PYTHONPATH

    if problems:
        print("env: missing " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def cmd_build_ops(args) -> int:
    """JIT-build FusedAdam once (the extension cache is shared by every later process)."""
    start = time.perf_counter()
    from deepspeed.ops.op_builder import FusedAdamBuilder

    FusedAdamBuilder().load()
    import torch
    from deepspeed.ops.adam import FusedAdam

    param = torch.nn.Parameter(torch.randn(1000, device="cuda"))
    param.grad = torch.randn_like(param)
    before = param.detach().clone()
    FusedAdam([param], lr=1e-2).step()
    torch.cuda.synchronize()
    assert not torch.equal(before, param.detach()), "FusedAdam step changed nothing"
    print(f"build-ops: FusedAdam built and stepped in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_torch_adam(args) -> int:
    """Back up ds_configs/zero{0..3}.json, then set ``optimizer.params.torch_adam`` in them."""
    backup = Path(args.backup)
    backup.mkdir(parents=True, exist_ok=True)
    for name in DS_CONFIGS:
        path = REPO / "ds_configs" / name
        shutil.copy2(path, backup / name)
        config = json.loads(path.read_text())
        config.setdefault("optimizer", {}).setdefault("params", {})["torch_adam"] = True
        path.write_text(json.dumps(config, indent=2) + "\n")
    (backup / "TORCH_ADAM").write_text("FusedAdam did not build; torch.optim.AdamW used\n")
    print(f"torch-adam: {', '.join(DS_CONFIGS)} now use torch.optim.AdamW (originals in {backup})")
    return 0


# ---------------------------------------------------------------- report

def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_dirs(work: Path, tag: str) -> list[Path]:
    return sorted(p for p in (work / "runs" / tag / "runs").glob("*") if p.is_dir())


def salvage(work: Path, tag: str) -> list[dict]:
    """Records of the runs of ``tag`` that finished, when the sweep itself did not get to write
    them (cut by its part's timeout): ``sweep.records`` on each run's own metrics.json."""
    from sweep import PRECISIONS, BenchConfig, Workload, records

    def metrics(run: Path) -> Optional[dict]:
        path = run / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    baselines, out = {}, []
    for run in run_dirs(work, tag):
        found = re.match(r"^baseline_(?P<loader>[a-z-]+)_(?P<model>dense|shared-lowrank)$",
                         run.name)
        if found and (m := metrics(run)):
            baselines[(found["loader"], found["model"])] = m
            for record in records(None, m, m, _workload(m, Workload)):
                record.update(config=run.name, loader=found["loader"], model=found["model"],
                              stage="plain", precision="fp32", world_size=1)
                out.append(record)
    named = [(run, RUN_NAME.match(run.name)) for run in run_dirs(work, tag)]
    named = sorted(((run, found) for run, found in named if found),  # the sweep's order
                   key=lambda item: (item[1]["stage"], PRECISIONS.index(item[1]["precision"])))
    for run, found in named:
        if m := metrics(run):
            stage = found["stage"] + ("+offload" if found["offload"] else "")
            config = BenchConfig(stage, found["precision"], int(found["world"]), found["loader"],
                                 found["model"], bool(found["ckpt"]))
            out.extend(records(config, m, baselines.get((config.loader, config.model)),
                               _workload(m, Workload)))
    return out


def _workload(metrics: dict, workload_cls):
    model = (metrics.get("config") or {}).get("model") or {}
    return workload_cls(arch=model.get("arch", "sage"), hidden=model.get("hidden", 0),
                        layers=model.get("layers", 0))


def _mib(value) -> str:
    from gnnzero.observe.memory import format_bytes

    return "" if value is None else format_bytes(value)


def _x(value) -> str:
    return "" if value is None else f"{value:.2f}x"


GPU_COLUMNS = ["config", "peak", "peak reserved", "step peak above start", "model states",
               "ZeRO formula", "measured/formula", "train nodes/s", "thr vs plain", "test acc"]


def gpu_rows(records: list[dict]) -> list[dict[str, str]]:
    rows = []
    for r in records:
        formula = ((r.get("zero_formula_bytes") or {}).get("all_devices") or {}).get("total")
        rows.append({
            "config": r["config"], "peak": f"{_mib(r['peak_bytes'])} ({r['memory_kind']})",
            "peak reserved": _mib(r.get("peak_reserved_bytes")),
            "step peak above start": _mib((r.get("activation_bytes") or {})
                                          .get("cuda_step_peak_above_start")),
            "model states": _mib((r.get("model_state_bytes") or {}).get("total")),
            "ZeRO formula": _mib(formula),
            "measured/formula": _x(r.get("model_state_measured_over_formula")),
            "train nodes/s": f"{r['train_nodes_per_s']:,.0f}",
            "thr vs plain": _x(r.get("throughput_over_baseline")),
            "test acc": f"{r['test_accuracy']:.3f}"})
    return rows


def fp16_rows(work: Path, tag: str) -> list[dict[str, str]]:
    """Loss scaling of the fp16 runs, from their metrics.json (the sweep's records omit it)."""
    rows = []
    for run in run_dirs(work, tag):
        path = run / "metrics.json"
        if "_fp16_" in run.name and path.exists():
            m = json.loads(path.read_text())
            rows.append({"config": run.name, "skipped steps": m.get("skipped_steps"),
                         "optimizer steps": m.get("optimizer_steps"),
                         "final loss scale": m.get("loss_scale")})
    return rows


def failures(work: Path, tag: str) -> list[tuple[str, str]]:
    out = []
    for run in run_dirs(work, tag):
        if not (run / "metrics.json").exists():
            log = run / "log.txt"
            tail = log.read_text(errors="replace").strip().splitlines()[-8:] if log.exists() \
                else ["(no log)"]
            out.append((run.name, "\n".join(tail)))
    return out


def _parts(work: Path) -> list[dict[str, str]]:
    path = work / "parts.tsv"
    rows = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        name, status, seconds, command = (line.split("\t") + ["", "", ""])[:4]
        status = {"0": "ok", "124": "timed out", "137": "timed out (killed)"}.get(status,
                                                                                  status)
        rows.append({"part": name, "status": status, "seconds": seconds,
                     "command": f"`{command[:300]}`"})
    return rows


def write_part(work: Path, results: Path, tag: str) -> tuple[list[dict], str]:
    """This part's records (the sweep's, or salvaged) and files in ``results``; (records, how)."""
    staged = work / "sweeps" / f"bench_{tag}.jsonl"
    if staged.exists():
        records, how = _read_jsonl(staged), "written by benchmarks/run.py"
        for ext in ("jsonl", "png"):
            source = work / "sweeps" / f"bench_{tag}.{ext}"
            if source.exists():
                shutil.copy2(source, results / source.name)
    else:
        records = salvage(work, tag)
        if not records:
            return [], "no run finished"
        how = "salvaged from the finished runs' metrics.json (the sweep was cut short)"
        from plots import plot_memory_and_throughput
        from tables import save_records

        _, _, png, env = save_records(results, f"bench_{tag}", records)
        plot_memory_and_throughput(records, str(png), f"{tag}: per-rank memory breakdown and "
                                                      f"throughput ({env.get('device', '?')})")
    return records, how


def cmd_report(args) -> int:
    from gnnzero.observe.report import markdown_table
    from tables import bench_markdown

    work, results = Path(args.work), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    env_path = work / "env.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    command = (work / "command.txt").read_text().strip() if (work / "command.txt").exists() \
        else "bash benchmarks/gpu_check.sh"
    torch_adam = (work / "ds_configs" / "TORCH_ADAM").exists()
    lines = [f"# GPU check: {env.get('device', '?')}", "",
             f"Written by `benchmarks/gpu_check.sh` ({env.get('date', '?')}); commit "
             f"{env.get('commit', commit_label())}.", "",
             f"Command: `{command}`", "",
             f"Device: {env.get('device', '?')}"
             + (f", compute capability {env['capability']}, "
                f"{_mib(env.get('device_memory_bytes'))}, {env.get('multiprocessors')} SMs; "
                f"nvidia-smi: {env.get('nvidia_smi', '-')}" if env.get("capability") else "")
             + f"; {env.get('cpus', '?')} CPUs.  Python {env.get('python')}, torch "
             f"{env.get('torch')} "
             f"(CUDA {env.get('cuda_runtime')}), PyG {env.get('torch_geometric')}, DeepSpeed "
             f"{env.get('deepspeed')}, pymetis {env.get('pymetis')}; torch-sparse "
             f"{env.get('with_torch_sparse')}, torch-scatter {env.get('with_torch_scatter')}, "
             f"pyg-lib {env.get('with_pyg_lib')}.", "",
             "Optimizer: " + ("**torch.optim.AdamW** (`torch_adam`): DeepSpeed's FusedAdam did "
                              "not build here, see the log." if torch_adam else
                              "DeepSpeed's default for the device (FusedAdam on CUDA, torch "
                              "AdamW on CPU)."), "",
             "Peaks are `torch.cuda.max_memory_allocated` (`cuda_max_allocated`) per rank on "
             "GPU; *step peak above start* is the allocator peak during forward + backward "
             "above the step's starting level; *thr vs plain* is training throughput against "
             "the plain PyG + torch.optim loop (fp32, same batches) of the same sweep.  "
             "benchmarks/README.md says how to read the ratios.", "",
             "## Parts", "", markdown_table(_parts(work), ["part", "status", "seconds",
                                                          "command"]), ""]
    status = 0
    for tag, title in PARTS.items():
        records, how = write_part(work, results, tag)
        lines += [f"## {title} (`bench_{tag}`)", ""]
        if not records:
            if not args.final and not run_dirs(work, tag):
                how = "not run yet"
            lines += [f"No records: {how}.", ""]
            status = 1 if args.final else status
            continue
        first = records[0]
        lines += [f"{first['dataset']}: {first['num_nodes']:,} nodes, {first['num_edges']:,} "
                  f"edges; {first['arch']} hidden {first['hidden']} x {first['layers']} layers; "
                  f"records {how}.", "",
                  markdown_table(gpu_rows(records), GPU_COLUMNS), ""]
        fp16 = fp16_rows(work, tag)
        if fp16:
            lines += ["fp16 dynamic loss scaling (from each run's metrics.json):", "",
                      markdown_table(fp16, ["config", "skipped steps", "optimizer steps",
                                            "final loss scale"]), ""]
        failed = failures(work, tag)
        if failed:
            status = 1
            lines += ["Failed runs (last lines of each log):", ""]
            for name, tail in failed:
                lines += [f"- `{name}`:", "", "```", tail, "```", ""]
        lines += ["<details><summary>All columns</summary>", "",
                  bench_markdown(records, "").strip(), "", "</details>", ""]
    md = results / "bench_gpu.md"
    md.write_text("\n".join(lines))
    # The device tool's reply holds the output's end: the report less its full tables.
    print(re.sub(r"<details>.*?</details>\n", "", md.read_text(), flags=re.S))
    if args.out:
        copy_out(work, results, Path(args.out))
    return status


def copy_out(work: Path, results: Path, out: Path) -> None:
    """The results, and one archive of every run's log and metrics.json, under ``out`` (the
    device tool brings back at most 8 files; gpu_check.log is already there)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(results.glob("bench_gpu*")):
        if path.suffix in (".md", ".jsonl", ".png"):
            shutil.copy2(path, out / path.name)
    with tarfile.open(out / "gpu_check_runs.tar.gz", "w:gz") as tar:
        for name in ("env.json", "parts.tsv", "command.txt", "prepare.log"):
            if (work / name).exists():
                tar.add(work / name, arcname=name)
        for path in sorted((work / "runs").rglob("*")):
            if path.name in ("log.txt", "metrics.json"):
                tar.add(path, arcname=str(path.relative_to(work)))
    print(f"report: copied to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env")
    env.add_argument("--out-json", required=True)
    env.add_argument("--require", nargs="*", default=[], help="distributions that must be there")
    sub.add_parser("build-ops")
    sub.add_parser("torch-adam").add_argument("--backup", required=True)
    report = sub.add_parser("report")
    report.add_argument("--work", required=True)
    report.add_argument("--results", required=True)
    report.add_argument("--out", default=None)
    report.add_argument("--final", action="store_true",
                        help="a part without records fails the report (else: not run yet)")
    args = parser.parse_args(argv)
    return {"env": cmd_env, "build-ops": cmd_build_ops, "torch-adam": cmd_torch_adam,
            "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
