"""Plain PyG + ``torch.optim.AdamW`` baseline: the same model and batches as launch/train.py, no DeepSpeed.

    python benchmarks/baseline.py --ds_config ds_configs/zero0.json [the same flags as train.py]

The ds_config is read only for the optimizer's hyper-parameters and gradient
clipping, so both runs optimise identically; the baseline always trains in fp32
on one process (rank 0 of a world of one: the batches a 1-rank DeepSpeed run
sees).  It writes ``metrics.json`` with the same memory / throughput fields.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gnnzero.config import RunConfig, parse_config  # noqa: E402
from gnnzero.errors import exit_on_user_error  # noqa: E402


def _optimizer(model: torch.nn.Module, ds_config: dict) -> torch.optim.AdamW:
    params = dict(ds_config.get("optimizer", {}).get("params", {}))
    return torch.optim.AdamW(model.parameters(), lr=params.get("lr", 1e-3),
                             betas=tuple(params.get("betas", (0.9, 0.999))),
                             eps=params.get("eps", 1e-8),
                             weight_decay=params.get("weight_decay", 0.01))


def run_baseline(cfg: RunConfig) -> dict[str, Any]:
    """Train with a plain PyTorch loop; write and return ``metrics.json`` (engine ``plain-pyg``)."""
    from tqdm import tqdm

    from gnnzero.data import build_loader, load_dataset
    from gnnzero.engine.batches import node_loss, prepare_batch
    from gnnzero.engine.ds_config import apply_overrides, load_ds_config
    from gnnzero.engine.evaluation import evaluate
    from gnnzero.models import build_model, count_parameters, forward_batch
    from gnnzero.observe.memory import peak_memory, reset_peak
    from gnnzero.observe.probe import MemoryProbe
    from gnnzero.observe.report import run_environment
    from gnnzero.utils.atomic import atomic_json_dump

    ds_config = apply_overrides(load_ds_config(cfg.ds_config), cfg.engine)
    clip = float(ds_config.get("gradient_clipping", 0.0) or 0.0)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(cfg.train.seed)
    d = cfg.data
    dataset = load_dataset(d.dataset, d.data_root, d.num_nodes, cfg.train.seed, d.feature_store,
                           d.cache_dir, avg_degree=getattr(d, "avg_degree", None),
                           words_per_node=getattr(d, "words_per_node", None))
    loader = build_loader(dataset, cfg.loader, 0, 1, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)  # the same initial weights as the DeepSpeed run
    m = cfg.model
    model = build_model(m.arch, dataset.num_features, m.hidden, dataset.num_classes, m.layers,
                        share_weights=m.share_weights, rank=m.rank, dropout=m.dropout, norm=m.norm,
                        jk=m.jk, heads=m.heads,
                        activation_checkpointing=m.activation_checkpointing).to(device)
    num_params = count_parameters(model)
    optimizer = _optimizer(model, ds_config)
    probe = MemoryProbe(model, optimizer, device, num_params, 0, 1, "fp32")
    probe.record_host(dataset, loader)
    reset_peak(device)
    split = {"sampling": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    counts = {"train_nodes": 0.0, "batch_nodes": 0.0, "batch_edges": 0.0, "batches": 0.0}
    epochs, train_seconds = [], 0.0
    for epoch in range(cfg.train.epochs):
        model.train()
        start, losses = time.perf_counter(), []
        batches = loader.epoch(epoch)
        for _ in tqdm(range(len(loader)), desc=f"baseline epoch {epoch}", leave=False):
            t0 = time.perf_counter()
            batch = prepare_batch(next(batches), device, torch.float32)
            probe.begin_step(batch)
            t1 = time.perf_counter()
            with probe.forward():
                loss = node_loss(forward_batch(model, batch), batch)
            sync()
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            sync()
            t3 = time.perf_counter()
            probe.after_backward()
            optimizer.step()
            sync()
            probe.after_step()
            t4 = time.perf_counter()
            for key, seconds in zip(split, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                split[key] += seconds
            counts["train_nodes"] += float(batch.loss_mask.sum())
            counts["batch_nodes"] += batch.num_nodes
            counts["batch_edges"] += batch.edge_index.size(1)
            counts["batches"] += 1
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        train_seconds += seconds
        epochs.append({"epoch": epoch, "loss": sum(losses) / max(1, len(losses)), "seconds": seconds})
    final = evaluate(model, dataset, loader, device, torch.float32)
    per_second = max(train_seconds, 1e-9)
    metrics = {
        "engine": "plain-pyg", "test_accuracy": final["test"]["accuracy"],
        "val_accuracy": final["val"]["accuracy"], "train_accuracy": final["train"]["accuracy"],
        "epoch_time_s": train_seconds / max(1, len(epochs)), "train_seconds": train_seconds,
        "throughput": {"train_nodes_per_s": counts["train_nodes"] / per_second,
                       "batch_nodes_per_s": counts["batch_nodes"] / per_second,
                       "edges_per_s": counts["batch_edges"] / per_second,
                       "batches_per_s": counts["batches"] / per_second},
        "memory": {"per_rank": [{"rank": 0, **peak_memory(device), **probe.summary(),
                                 "step_time_split_s": split}]},
        "zero_stage": None, "precision": "fp32", "offload": "none", "world_size": 1,
        "num_parameters": num_params, "epochs": epochs,
        "dataset": {"name": dataset.name, "num_nodes": dataset.num_nodes,
                    "num_edges": dataset.num_edges},
        "loader": {"kind": cfg.loader.kind, "steps_per_epoch": len(loader)},
        "config": cfg.as_dict(), "environment": run_environment(device),
    }
    metrics["memory"]["kind"] = metrics["memory"]["per_rank"][0]["kind"]
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    atomic_json_dump(metrics, os.path.join(cfg.train.output_dir, "metrics.json"))
    print(f"baseline: test acc {metrics['test_accuracy']:.4f}  epoch {metrics['epoch_time_s']:.2f} s"
          f"  {metrics['throughput']['train_nodes_per_s']:,.0f} train nodes/s", flush=True)
    return metrics


@exit_on_user_error
def main(argv=None) -> None:
    run_baseline(parse_config(argv))


if __name__ == "__main__":
    main()
