"""PNG pictures of a run: node embeddings, a k-hop subgraph, training curves, an explanation.

matplotlib (Agg backend, no display needed); t-SNE from scikit-learn, UMAP from
``umap-learn`` (the ``inspect`` extra); graph drawing with networkx.  Each function takes
plain tensors / dicts and writes one PNG, so it can be used without a run dir.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from torch import Tensor

from ..errors import GnnZeroError
from .report import METRIC_NAMES

CLASS_CMAP = "tab10"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _class_colors(num_classes: int):
    plt = _pyplot()
    cmap = plt.get_cmap(CLASS_CMAP if num_classes <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(num_classes)]


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def require_umap() -> None:
    """One line when ``--method umap`` cannot run: umap-learn is not installed."""
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        raise GnnZeroError("--method umap needs umap-learn: pip install -e '.[inspect]' (or "
                           "pip install umap-learn), or use --method tsne")


def reduce_to_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``features`` by t-SNE (scikit-learn) or UMAP (umap-learn, the
    ``inspect`` extra); returns (coords, method).  A missing umap-learn is an error, never a
    silent t-SNE."""
    if method == "umap":
        require_umap()
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features), "umap"
    if method != "tsne":
        raise ValueError(f"embedding method '{method}' is unknown; use tsne or umap")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    coords = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                  max_iter=750).fit_transform(features)
    return coords, "tsne"


def plot_embeddings(coords: np.ndarray, labels: np.ndarray, path: str, title: str,
                    class_names: Optional[Sequence[str]] = None,
                    num_classes: Optional[int] = None) -> str:
    """Scatter of 2-D node coordinates coloured by class."""
    plt = _pyplot()
    num_classes = num_classes or int(labels.max()) + 1
    colors = _class_colors(num_classes)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for c in range(num_classes):
        keep = labels == c
        if keep.any():
            name = class_names[c] if class_names else f"class {c}"
            ax.scatter(coords[keep, 0], coords[keep, 1], s=6, color=colors[c], label=name,
                       alpha=0.8, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    return _save(fig, path)


def _networkx_graph(edge_index: Tensor, nodes: Sequence[int]):
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(int(n) for n in nodes)
    graph.add_edges_from((int(u), int(v)) for u, v in edge_index.t().tolist() if u != v)
    return graph


def plot_subgraph(edge_index: Tensor, nodes: Tensor, y_true: Tensor, y_pred: Tensor,
                  centers: Sequence[int], path: str, num_classes: int, title: str = "") -> str:
    """The subgraph on ``nodes`` (global ids) twice: coloured by true and by predicted class.

    Centre nodes are drawn larger with a black ring; on the right, wrongly
    predicted nodes have a red ring.
    """
    import networkx as nx

    plt = _pyplot()
    graph = _networkx_graph(edge_index, nodes.tolist())
    pos = nx.spring_layout(graph, seed=0)
    colors = _class_colors(num_classes)
    true_of = dict(zip(nodes.tolist(), y_true.tolist()))
    pred_of = dict(zip(nodes.tolist(), y_pred.tolist()))
    order = list(graph.nodes)
    sizes = [220 if n in centers else 60 for n in order]
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, label_of, name in ((axes[0], true_of, "true class"), (axes[1], pred_of, "predicted class")):
        edgecolors = ["black" if n in centers else
                      ("red" if name.startswith("pred") and pred_of[n] != true_of[n] else "none")
                      for n in order]
        nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.3, width=0.6)
        nx.draw_networkx_nodes(graph, pos, ax=ax, nodelist=order, node_size=sizes,
                               node_color=[colors[label_of[n]] for n in order],
                               edgecolors=edgecolors, linewidths=1.5)
        ax.set_title(name)
        ax.axis("off")
    wrong = sum(pred_of[n] != true_of[n] for n in order)
    fig.suptitle(f"{title}  ({len(order)} nodes, {graph.number_of_edges()} edges, "
                 f"{wrong} mispredicted)")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[c], label=f"class {c}")
               for c in range(num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(num_classes, 10), frameon=False)
    return _save(fig, path)


def plot_curves(metrics: dict, path: str) -> str:
    """Loss per optimizer step and epoch, validation accuracy or ROC-AUC (with CI), and peak
    memory."""
    plt = _pyplot()
    epochs = metrics.get("epochs", [])
    metric = (metrics.get("headline") or {}).get("metric", "accuracy")
    name = METRIC_NAMES[metric]
    interval = "Wilson" if metric == "accuracy" else "Hanley-McNeil"
    unit = "nodes" if metric == "accuracy" else "pairs"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    curve = metrics.get("loss_curve") or []
    if curve:
        steps, losses = zip(*curve)
        axes[0].plot(steps, losses, lw=0.8, alpha=0.6, label="per optimizer step")
    steps_per_epoch = (metrics.get("loader") or {}).get("steps_per_epoch")
    if epochs and steps_per_epoch:
        axes[0].plot([(e["epoch"] + 1) * steps_per_epoch for e in epochs],
                     [e["loss"] for e in epochs], "o-", ms=3, label="epoch mean")
    axes[0].set(title="training loss", xlabel="optimizer step", ylabel="loss")
    axes[0].legend(frameon=False)

    ax = axes[1]
    with_val = [e for e in epochs if f"val_{metric}" in e and "sampled_val" not in e]
    if with_val:
        ax.plot([e["epoch"] for e in with_val], [e[f"val_{metric}"] for e in with_val], "o-",
                ms=3, label="validation")
    sampled = [e for e in epochs if "sampled_val" in e]
    if sampled:
        x = [e["epoch"] for e in sampled]
        acc = [e["sampled_val"][metric] for e in sampled]
        lo = [e["sampled_val"]["ci_low"] for e in sampled]
        hi = [e["sampled_val"]["ci_high"] for e in sampled]
        ax.plot(x, acc, "s-", ms=3,
                label=f"sampled validation ({sampled[-1]['sampled_val']['total']} {unit})")
        ax.fill_between(x, lo, hi, alpha=0.25, label=f"95% {interval} interval")
    final = (metrics.get("evaluation") or {}).get("val")
    if final and epochs:
        ax.axhline(final[metric], color="k", ls="--", lw=0.8,
                   label=f"final exact validation {final[metric]:.3f}")
    ax.set(title=name, xlabel="epoch", ylabel=name)
    ax.legend(frameon=False, fontsize=8)

    ax = axes[2]
    with_mem = [e for e in epochs if "peak_memory_bytes" in e]
    if with_mem:
        ax.plot([e["epoch"] for e in with_mem], [e["peak_memory_bytes"] / 2**20 for e in with_mem],
                "o-", ms=3)
        kind = (metrics.get("memory") or {}).get("kind", "")
        ax.set(title=f"peak memory, max over ranks ({kind})", xlabel="epoch", ylabel="MiB")
    else:
        per_rank = (metrics.get("memory") or {}).get("per_rank") or []
        if per_rank:
            ax.bar([str(r["rank"]) for r in per_rank], [r["peak_bytes"] / 2**20 for r in per_rank])
            ax.set(title=f"peak memory per rank ({per_rank[0].get('kind', '')})", xlabel="rank",
                   ylabel="MiB")
    return _save(fig, path)


def plot_explanation(edge_index: Tensor, edge_mask: Tensor, feature_importance: Tensor,
                     node: int, path: str, top_k: int = 10, title: str = "",
                     max_edges: int = 40) -> str:
    """Left: the top feature importances; right: the ``max_edges`` most important edges."""
    import networkx as nx

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.4]})
    k = min(top_k, feature_importance.numel())
    if bool((feature_importance != 0).any()):
        values, index = feature_importance.topk(k)
        axes[0].barh([f"feature {int(i)}" for i in index.flip(0)], values.flip(0).tolist())
        axes[0].set(title=f"top {k} features", xlabel="importance (node mask, summed)")
    else:   # PGExplainer: an edge mask only
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no feature mask\n(this explainer scores edges only)",
                     ha="center", va="center")

    keep = edge_mask.argsort(descending=True)[:max_edges]
    keep = keep[edge_mask[keep] > 0]
    ei, weights = edge_index[:, keep], edge_mask[keep]
    graph = nx.DiGraph()
    graph.add_node(int(node))
    for (u, v), w in zip(ei.t().tolist(), weights.tolist()):
        if u != v:
            graph.add_edge(int(u), int(v), weight=float(w))
    pos = nx.spring_layout(graph.to_undirected(), seed=0)
    top = float(weights.max()) if weights.numel() else 1.0
    widths = [0.3 + 3.5 * graph.edges[e]["weight"] / top for e in graph.edges]
    alphas = [0.15 + 0.85 * graph.edges[e]["weight"] / top for e in graph.edges]
    nx.draw_networkx_edges(graph, pos, ax=axes[1], width=widths, alpha=alphas, arrows=True,
                           arrowsize=8, edge_color="tab:blue")
    others = [n for n in graph.nodes if n != node]
    nx.draw_networkx_nodes(graph, pos, ax=axes[1], nodelist=others, node_size=40,
                           node_color="lightgray")
    nx.draw_networkx_nodes(graph, pos, ax=axes[1], nodelist=[int(node)], node_size=200,
                           node_color="tab:red")
    axes[1].set_title(f"the {len(keep)} most important edges (node {node} in red)")
    axes[1].axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def plot_grad_norms(rows: list[dict], path: str) -> str:
    """Per-layer gradient norms over optimizer steps (from the monitor's ``grad_norms.csv``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    layers = sorted({r["layer"] for r in rows})
    for layer in layers:
        pts = [(int(r["step"]), float(r["grad_norm"])) for r in rows if r["layer"] == layer]
        ax.plot(*zip(*pts), lw=1, label=layer)
    ax.set(yscale="log", xlabel="optimizer step", ylabel="gradient L2 norm",
           title="gradient norm per layer")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_link_buckets(buckets: list[dict], threshold: float, path: str) -> str:
    """Recall and precision of the test edges per hop-distance bucket (bars, with sizes)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(buckets))
    recall = [b["recall"] for b in buckets]
    precision = [b["precision"] or 0.0 for b in buckets]
    ax.bar(x - 0.2, recall, 0.4, label="recall")
    ax.bar(x + 0.2, precision, 0.4, label="precision (distance-matched non-edges)")
    ax.set_xticks(x, [f"{b['bucket']}\n{b['positives']} edges" for b in buckets])
    ax.set(title=f"test edges by hop distance in the training graph (threshold {threshold:.3f})",
           xlabel="hop distance", ylabel="share", ylim=(0, 1.05))
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_score_histograms(histogram: dict, threshold: float, path: str) -> str:
    """Score (logit) histograms of the positive test edges and of their sampled non-edges."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.asarray(histogram["edges"])
    centres, width = (edges[1:] + edges[:-1]) / 2, np.diff(edges)
    ax.bar(centres, histogram["positives"], width, alpha=0.6, label="test edges")
    ax.bar(centres, histogram["negatives"], width, alpha=0.6, label="sampled non-edges")
    ax.axvline(threshold, color="k", ls="--", lw=0.8, label=f"threshold {threshold:.3f}")
    ax.set(title="pair scores", xlabel="score (logit)", ylabel="pairs")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)
