"""ZeRO-3's per-module hooks: step time with DeepSpeed's hooks, with gnnzero's replacement
(gnnzero/engine/zero3_hooks.py) and of the plain loop, on identical batches.

    python benchmarks/zero3_hooks.py --rounds 10

One process, a world of one: the three engines take their steps in turn (the order reversed
each round), so the machine's drift over minutes falls on all three alike.  DeepSpeed's own
hooks come from ``deepspeed.initialize`` called directly, the replacement from gnnzero's
``initialize_engine``; both read ds_configs/zero3.json.  Writes
``benchmarks/results/zero3_hooks_<tag>.md``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnnzero.builder import build_dataset, build_loader, build_model  # noqa: E402
from gnnzero.config import parse_config  # noqa: E402
from gnnzero.engine.batches import node_loss, prepare_batch  # noqa: E402
from gnnzero.engine.ds_config import finalize_for_device, load_ds_config  # noqa: E402
from gnnzero.engine.plain import PlainEngine, optimizer_from_ds_config  # noqa: E402
from gnnzero.engine.runtime import init_distributed, initialize_engine  # noqa: E402
from gnnzero.models import forward_batch  # noqa: E402
from gnnzero.observe.report import run_environment  # noqa: E402
from sweep import Workload  # noqa: E402  (the paired benchmarks' workload)

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = "ds_configs/zero3.json"


def deepspeed_module_hooks(model: torch.nn.Module) -> int:
    """How many of DeepSpeed's ZeRO-3 fetch/release forward hooks hang on ``model``."""
    return sum("parameter_offload" in hook.__code__.co_filename
               for module in model.modules()
               for hook in [*module._forward_pre_hooks.values(), *module._forward_hooks.values()])


def engines(cfg, dataset) -> dict:
    import deepspeed

    config = finalize_for_device(load_ds_config(CONFIG), "cpu")
    out = {}
    for name in ("plain loop", "ZeRO-3, DeepSpeed's hooks", "ZeRO-3, hooks replaced"):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, dataset)
        if name == "plain loop":
            out[name] = PlainEngine(model, optimizer_from_ds_config(model, config), 1,
                                    float(config.get("gradient_clipping", 0.0)))
        elif name.endswith("DeepSpeed's hooks"):
            out[name] = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                             config=config)[0]
        else:
            out[name] = initialize_engine(model, config)[0]
    hooked = [name for name, engine in out.items() if deepspeed_module_hooks(engine.module)]
    if hooked != ["ZeRO-3, DeepSpeed's hooks"]:
        raise SystemExit(f"expected DeepSpeed's module hooks on one engine only, found them on "
                         f"{hooked}: is every parameter under {CONFIG}'s persistence threshold?")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="epochs of steps per engine")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the table goes")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = parse_config(["--ds_config", CONFIG, "--layers", str(Workload.layers)])
    init_distributed(-1)
    dataset = build_dataset(cfg)
    batches = [prepare_batch(b, torch.device("cpu"), torch.float32)
               for b in build_loader(cfg, dataset).epoch(0)]
    runs = engines(cfg, dataset)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        order = list(runs.items()) if round_ % 2 == 0 else list(runs.items())[::-1]
        for batch in batches:
            for name, engine in order:
                start = time.perf_counter()
                engine.backward(node_loss(forward_batch(engine, batch), batch))
                engine.step()
                seconds[name].append(time.perf_counter() - start)
    plain = statistics.median(seconds["plain loop"])
    rows = [f"| {name} | {statistics.median(s) * 1e3:.1f} ms | {plain / statistics.median(s):.3f}x |"
            for name, s in seconds.items()]
    env = run_environment(torch.device("cpu"))
    text = "\n".join([
        f"# ZeRO-3 module hooks `{args.tag}`: step time on identical batches", "",
        f"Device: {env['device']}; torch {env['torch']}, DeepSpeed {env['deepspeed']}, "
        f"commit {env['git_commit']}.",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`", "",
        f"The paired benchmarks' workload (synthetic {cfg.data.num_nodes:,} nodes, "
        f"{cfg.model.arch} {cfg.model.hidden} x {cfg.model.layers}, Cluster-GCN batches), "
        f"{CONFIG}, one process; {args.rounds} epochs of {len(batches)} steps per engine, the "
        "engines stepping in turn; no prefetching. Median step; throughput over the plain "
        "loop's.", "",
        "| engine | median step | plain / this |", "|---|---|---|", *rows, ""])
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"zero3_hooks_{args.tag}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
