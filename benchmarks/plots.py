"""PNG plots of benchmark records (matplotlib, headless)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

MIB = 2 ** 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory_and_throughput(records: list[dict[str, Any]], path: str, title: str) -> None:
    """Per configuration (rank 0): stacked memory breakdown with the ZeRO-formula mark, and throughput."""
    plt = _pyplot()
    rows = [r for r in records if r["rank"] == 0]
    labels = [r["config"] for r in rows]
    parts = {
        "parameters": [r["model_state_bytes"].get("params", 0) for r in rows],
        "gradients": [r["model_state_bytes"].get("gradients", 0) for r in rows],
        "optimizer (master + states)": [r["model_state_bytes"].get("master_params", 0)
                                        + r["model_state_bytes"].get("optimizer_states", 0)
                                        for r in rows],
        "activations (saved for backward)": [(r.get("activation_bytes") or {}).get("peak", 0)
                                             for r in rows],
        "batch tensors": [r.get("batch_bytes_peak") or 0 for r in rows],
    }
    height = max(3.5, 0.32 * len(rows) + 2.0)
    fig, (ax_mem, ax_thr) = plt.subplots(1, 2, figsize=(14, height), sharey=True,
                                         gridspec_kw={"width_ratios": [2, 1]})
    left = [0.0] * len(rows)
    for name, values in parts.items():
        mib = [v / MIB for v in values]
        ax_mem.barh(labels, mib, left=left, label=name)
        left = [a + b for a, b in zip(left, mib)]
    formula = [((r.get("zero_formula_bytes") or {}).get("all_devices") or {}).get("total", 0) / MIB
               for r in rows]
    ax_mem.scatter(formula, labels, marker="|", s=200, color="black", zorder=3,
                   label="ZeRO formula (model states)")
    ax_mem.set_xlabel("MiB per rank (rank 0)")
    ax_mem.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    ax_mem.invert_yaxis()
    ax_thr.barh(labels, [r.get("train_rate_per_s", r.get("train_nodes_per_s", 0)) for r in rows], color="tab:gray")
    ax_thr.set_xlabel("training nodes / s (all ranks)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(records: list[dict[str, Any]], path: str, title: str) -> None:
    """Log-log: working set, peak RSS increment and epoch time against graph size, per loader."""
    plt = _pyplot()
    by_loader: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["rank"] == 0:
            by_loader[r["loader"]].append(r)
    panels = [
        ("working_set_bytes", "model states + activations + batch (MiB)", MIB),
        ("training_rss_increment_bytes", "peak RSS in a step above train start (MiB)", MIB),
        ("epoch_time_s", "epoch time (s)", 1.0),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.2))
    for ax, (key, label, scale) in zip(axes, panels):
        for loader, rows in sorted(by_loader.items()):
            rows = sorted((r for r in rows if r.get(key)), key=lambda r: r["num_nodes"])
            ax.loglog([r["num_nodes"] for r in rows], [r[key] / scale for r in rows],
                      marker="o", label=loader)
        ax.set_xlabel("graph nodes")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
