"""Run environment and the end-of-run summary table."""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import torch

from .memory import format_bytes


def git_commit() -> str:
    """The checkout's short commit; ``GNNZERO_GIT_COMMIT`` where there is no ``.git`` (a copy
    sent to another machine)."""
    if os.environ.get("GNNZERO_GIT_COMMIT"):
        return os.environ["GNNZERO_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_environment(device: torch.device) -> dict[str, Any]:
    """Device name and library versions, recorded with every result."""
    import torch_geometric

    try:
        import deepspeed
        ds_version = deepspeed.__version__
    except ImportError:
        ds_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"device": name, "device_type": device.type, "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "deepspeed": ds_version,
            "python": platform.python_version(), "git_commit": git_commit()}


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub-markdown table of ``rows`` restricted to ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _measured_rows(per_rank: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Measured model-state / activation bytes per rank, when the memory probe ran."""
    if not per_rank or "model_state_bytes" not in per_rank[0]:
        return []

    def each(get) -> str:
        return ", ".join(f"r{r['rank']}: {format_bytes(get(r))}" for r in per_rank)
    return [("model states per rank (measured)", each(lambda r: r["model_state_bytes"]["total"])),
            ("activations per rank (saved for backward)",
             each(lambda r: r["activation_bytes"]["peak"]))]


METRIC_NAMES = {"accuracy": "accuracy", "auc": "ROC-AUC"}


def _accuracy_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline test figure (best-validation epoch, when validated) and the last epoch's:
    accuracy, or ROC-AUC for link prediction."""
    headline = metrics.get("headline") or {"source": "last epoch"}
    metric = headline.get("metric", "accuracy")
    name, key = METRIC_NAMES[metric], f"test_{metric}"
    last = (f"test {name} (last epoch, final model)", f"{metrics[key]:.4f}")
    if headline["source"] == "last epoch":
        return [(f"test {name} (headline: last epoch)", last[1])]
    return [(f"test {name} (headline: best-validation epoch {headline['epoch']})",
             f"{headline[key]:.4f}"), last]


def _task_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Validation figure; for link prediction also AP, MRR and Hits@K of the test edges."""
    if metrics.get("task", "node") == "node":
        auc = metrics["evaluation"]["test"].get("roc_auc_macro_ovr")
        return [("val accuracy", f"{metrics['val_accuracy']:.4f}"),
                *([("test ROC-AUC (one-vs-rest, macro)", f"{auc:.4f}")] if auc is not None
                  else [])]
    test, split = metrics["evaluation"]["test"], metrics["evaluation"]["split"]
    hits = ", ".join(f"{k} {v:.3f}" for k, v in test.items() if k.startswith("hits@"))
    made = " (the directed input was made undirected)" if split.get("directed_input") else ""
    return [("edges: train / val / test (undirected)",
             f"{split['train_edges']:,} / {split['val_edges']:,} / {split['test_edges']:,}{made}"),
            ("val ROC-AUC", f"{metrics['val_auc']:.4f}"),
            ("test average precision / MRR", f"{test['average_precision']:.4f} / "
                                             f"{test['mrr']:.4f}"),
            ("test Hits@K", hits)]


def bucket_markdown(buckets: list[dict[str, Any]]) -> str:
    """The per-distance precision / recall table of a link run."""
    rows = [{"hop distance": b["bucket"], "test edges": b["positives"],
             "matched non-edges": b["negatives"], "recall": f"{b['recall']:.3f}",
             "precision": "-" if b["precision"] is None else f"{b['precision']:.3f}"}
            for b in buckets]
    return markdown_table(rows, ["hop distance", "test edges", "matched non-edges", "recall",
                                 "precision"])


def _batch_rows(per_rank: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """How the training batches carried the features, and their largest size, per rank."""
    if not per_rank or "batch_x_layout" not in per_rank[0]:
        return []
    return [("training batches: x layout / peak bytes",
             ", ".join(f"r{r['rank']}: {r['batch_x_layout']} / "
                       f"{format_bytes(r['batch_bytes_peak'])}" for r in per_rank))]


def print_summary(metrics: dict[str, Any]) -> None:
    """The end-of-run table: accuracy, time, per-rank memory, throughput, stage and precision."""
    memory = metrics["memory"]
    peaks = ", ".join(f"r{r['rank']}: {format_bytes(r['peak_bytes'])}" for r in memory["per_rank"])
    rows = [
        *_accuracy_rows(metrics),
        *_task_rows(metrics),
        ("epoch time", f"{metrics['epoch_time_s']:.2f} s"),
        (f"peak memory per rank ({memory['kind']})", peaks),
        (("throughput (train pairs/s)", f"{metrics['throughput']['train_pairs_per_s']:,.0f}")
         if metrics.get("task") == "link" else
         ("throughput (train nodes/s)", f"{metrics['throughput']['train_nodes_per_s']:,.0f}")),
        ("throughput (batch nodes/s)", f"{metrics['throughput']['batch_nodes_per_s']:,.0f}"),
        ("ZeRO stage / precision / offload",
         f"{metrics['zero_stage']} / {metrics['precision']} / {metrics['offload']}"),
        ("world size", str(metrics["world_size"])),
        *([("fp16 skipped steps / final loss scale",
            f"{metrics['skipped_steps']} of {metrics['optimizer_steps']} / "
            f"{metrics['loss_scale']:g}")] if metrics.get("loss_scale") is not None else []),
        ("parameters", f"{metrics['num_parameters']:,}"),
        *([("model states per rank (ZeRO formula)",
            format_bytes(memory["zero_formula_model_state_bytes"]["total"]))]
          if "zero_formula_model_state_bytes" in memory else []),
        *_measured_rows(memory["per_rank"]),
        *_batch_rows(memory["per_rank"]),
        ("device", metrics["environment"]["device"]),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * (width + 40))
    print(f"{'summary':<{width}}   {metrics['dataset']['name']} / {metrics['loader']['kind']}")
    print("-" * (width + 40))
    for key, value in rows:
        print(f"{key:<{width}}   {value}")
    print("=" * (width + 40), flush=True)
    if metrics.get("task") == "link":
        final = metrics["evaluation"]
        print(f"test edges by hop distance in the training graph (threshold "
              f"{final['threshold']:.3f}, Youden's J on validation):")
        print(bucket_markdown(final["buckets"]), flush=True)
