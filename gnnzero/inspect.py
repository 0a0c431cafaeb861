"""Look inside a finished run: embeddings, subgraphs, explanations and training curves as PNGs.

    python -m gnnzero.inspect RUN_DIR --curves --embeddings --subgraph 12 --explain 12

``RUN_DIR`` is a training ``--output-dir`` (``metrics.json`` + ``checkpoints/``).
The dataset and model are rebuilt from the run's recorded ``config.json`` and loaded with the
consolidated fp32 weights of the latest checkpoint (any ZeRO stage); predictions
and embeddings come from exact layer-wise inference over mini-batches.  Pictures
go to ``RUN_DIR/inspect/`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Optional, Sequence

import torch

from .config import RunConfig, read_run_config
from .errors import GnnZeroError, exit_on_user_error


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"error: {message}; see `python -m gnnzero.inspect --help`\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(prog="python -m gnnzero.inspect",
                            description="Pictures and explanations of a finished gnnzero run.")
    p.add_argument("run_dir", help="the training run's --output-dir")
    p.add_argument("--curves", action="store_true", help="loss / accuracy / memory curves")
    p.add_argument("--links", action="store_true",
                   help="a --task link run: recall / precision by hop distance and the score "
                        "histograms (the default for link runs)")
    p.add_argument("--embeddings", action="store_true", help="2-D map of the node embeddings")
    p.add_argument("--subgraph", type=int, nargs="+", metavar="NODE",
                   help="k-hop subgraph around these nodes, true vs predicted class")
    p.add_argument("--explain", type=int, nargs="+", metavar="NODE",
                   help="most important edges (and, GNNExplainer, features) for these nodes")
    p.add_argument("--explainer", choices=["gnn", "pg"], default="gnn",
                   help="gnn = GNNExplainer (per node, edges + features); pg = PGExplainer "
                        "(one edge-mask network trained over many nodes, edges only)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/inspect)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder, if it moved since training (default: the run's)")
    p.add_argument("--method", choices=["tsne", "umap"], default="tsne",
                   help="2-D reduction for --embeddings (umap needs umap-learn: the inspect "
                        "extra)")
    p.add_argument("--max-points", type=int, default=2000,
                   help="embed at most this many nodes (random, fixed seed)")
    p.add_argument("--hops", type=int, default=2, help="hops for --subgraph")
    p.add_argument("--max-subgraph-nodes", type=int, default=250)
    p.add_argument("--explain-epochs", type=int, default=100,
                   help="GNNExplainer: optimisation steps per node; PGExplainer: epochs over "
                        "its training nodes (PyG's example: 30)")
    p.add_argument("--pg-train-nodes", type=int, default=16,
                   help="PGExplainer: random training nodes its edge-mask network is fitted on "
                        "(besides the explained ones)")
    p.add_argument("--top-k", type=int, default=10, help="rows in the explanation tables")
    p.add_argument("--batch-size", type=int, default=4096, help="layer-wise inference batch")
    p.add_argument("--seed", type=int, default=0)
    return p


# ----------------------------------------------------------------------------- loading

def read_metrics(run_dir: str) -> dict[str, Any]:
    if not os.path.isdir(run_dir):
        raise GnnZeroError(f"run directory {run_dir} does not exist; pass a training --output-dir")
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise GnnZeroError(f"{run_dir} has no metrics.json; it is not a finished training run "
                           f"(train with `python launch/train.py --output-dir {run_dir}` first)")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def checkpoint_dir(run_dir: str) -> str:
    from .engine.checkpoint import latest_tag

    folder = os.path.join(run_dir, "checkpoints")
    if latest_tag(folder) is None:
        raise GnnZeroError(f"{run_dir} has no checkpoint ({folder} holds no complete step<N> "
                           f"tag); train without --no-checkpoint")
    return folder


def check_nodes(nodes: Sequence[int], num_nodes: int, flag: str) -> None:
    for node in nodes:
        if not 0 <= node < num_nodes:
            raise GnnZeroError(f"{flag} node {node} is out of range: the graph has {num_nodes} "
                               f"nodes (ids 0..{num_nodes - 1})")


def load_run_dataset(config: RunConfig, data_root: Optional[str] = None):
    """The run's dataset, rebuilt from its recorded config (PCA and all)."""
    from .builder import build_dataset

    if data_root:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      data_root=data_root))
    return build_dataset(config)


def load_run_model(config: RunConfig, dataset, ckpt_dir: str) -> torch.nn.Module:
    """The plain ``BasicGNN`` of the run with the checkpoint's consolidated fp32 weights."""
    from .builder import build_model
    from .engine.checkpoint import export_fp32_state_dict

    # The exported weights are keyed for the plain model (see plain_state_dict): inference
    # recomputes nothing, so the model is rebuilt without activation checkpointing.
    plain = dataclasses.replace(config.model, activation_checkpointing=False)
    model = build_model(dataclasses.replace(config, model=plain), dataset)
    state = export_fp32_state_dict(ckpt_dir)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GnnZeroError(f"checkpoint {ckpt_dir} does not fit the model in the run's config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was the run "
                           f"directory reused for a different model?")
    return model.eval()


# ------------------------------------------------------------------------------ actions

def _table(rows: list[dict], columns: list[str]) -> str:
    from .observe.report import markdown_table

    return markdown_table(rows, columns)


def do_curves(metrics: dict, run_dir: str, out: str) -> list[str]:
    from .observe.pictures import plot_curves, plot_grad_norms

    written = [plot_curves(metrics, os.path.join(out, "curves.png"))]
    monitor_dir = (metrics.get("monitor") or {}).get("dir") or os.path.join(run_dir, "monitor")
    csv_path = os.path.join(monitor_dir, "grad_norms.csv")
    if os.path.isfile(csv_path):
        import csv

        with open(csv_path, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if rows:
            written.append(plot_grad_norms(rows, os.path.join(out, "grad_norms.png")))
    return written


def do_links(metrics: dict, out: str) -> list[str]:
    """The link run's distance bars and score histograms, from its recorded evaluation."""
    from .observe.pictures import plot_link_buckets, plot_score_histograms

    final = metrics["evaluation"]
    return [plot_link_buckets(final["buckets"], final["threshold"],
                              os.path.join(out, "link_buckets.png")),
            plot_score_histograms(final["histogram"], final["threshold"],
                                  os.path.join(out, "link_scores.png"))]


def do_embeddings(hidden: torch.Tensor, dataset, pred: torch.Tensor, out: str, method: str,
                  max_points: int, seed: int, title: str) -> str:
    from .observe.pictures import plot_embeddings, reduce_to_2d

    n = hidden.size(0)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=generator)[:max_points].sort().values
    coords, used = reduce_to_2d(hidden[chosen].numpy(), method, seed)
    accuracy = float((pred[chosen] == dataset.y[chosen]).float().mean())
    return plot_embeddings(coords, dataset.y[chosen].numpy(), os.path.join(out, "embeddings.png"),
                           f"{title}: hidden node embeddings ({used}, {len(chosen)} nodes, "
                           f"agreement with labels {accuracy:.2f})",
                           num_classes=dataset.num_classes)


def khop_nodes(node: int, hops: int, edge_index: torch.Tensor, num_nodes: int,
               max_nodes: int, seed: int) -> tuple[torch.Tensor, int]:
    """Nodes within ``hops`` of ``node`` (fewer hops, then a random cut, if over ``max_nodes``)."""
    from torch_geometric.utils import k_hop_subgraph

    for h in range(hops, 0, -1):
        subset = k_hop_subgraph(node, h, edge_index, num_nodes=num_nodes)[0]
        if subset.numel() <= max_nodes or h == 1:
            break
    if subset.numel() > max_nodes:
        others = subset[subset != node]
        keep = torch.randperm(others.numel(), generator=torch.Generator().manual_seed(seed))
        subset = torch.cat([torch.tensor([node]), others[keep[:max_nodes - 1]]]).sort().values
    return subset, h


def do_subgraph(node: int, dataset, pred: torch.Tensor, out: str, hops: int, max_nodes: int,
                seed: int) -> str:
    from torch_geometric.utils import subgraph

    from .observe.pictures import plot_subgraph

    subset, used = khop_nodes(node, hops, dataset.edge_index, dataset.num_nodes, max_nodes, seed)
    edge_index, _ = subgraph(subset, dataset.edge_index, num_nodes=dataset.num_nodes)
    return plot_subgraph(edge_index, subset, dataset.y[subset], pred[subset], [node],
                         os.path.join(out, f"subgraph_{node}.png"), dataset.num_classes,
                         title=f"node {node}: {used}-hop neighbourhood, true class "
                               f"{int(dataset.y[node])}, predicted {int(pred[node])}")


MODEL_CONFIG = dict(mode="multiclass_classification", task_level="node", return_type="raw")


def _subgraph(model, dataset, nodes, extra_hops: int = 1
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(subset, edge_index, positions of nodes)``: the (layers + ``extra_hops``)-hop
    subgraph of ``nodes``, relabelled (one extra hop makes GCN's degrees exact)."""
    from torch_geometric.utils import k_hop_subgraph

    subset, edge_index, mapping, _ = k_hop_subgraph(torch.as_tensor(nodes),
                                                    model.num_layers + extra_hops,
                                                    dataset.edge_index, relabel_nodes=True,
                                                    num_nodes=dataset.num_nodes)
    return subset, edge_index, mapping


def _summary(model, dataset, node: int, subset, edge_index, x, position: int,
             edge_mask: torch.Tensor, features: torch.Tensor, top_k: int) -> dict[str, Any]:
    """An explanation's tables: the top edges (global ids) and features, the prediction."""
    with torch.no_grad():
        probs = model(x, edge_index)[position].softmax(-1)
    order = edge_mask.argsort(descending=True)[:top_k]
    top_edges = [{"rank": i + 1, "source": int(subset[edge_index[0, e]]),
                  "target": int(subset[edge_index[1, e]]),
                  "importance": float(f"{float(edge_mask[e]):.4g}")}
                 for i, e in enumerate(order.tolist()) if edge_mask[e] > 0]
    f_order = features.argsort(descending=True)[:top_k]
    top_features = [{"rank": i + 1, "feature": int(f),
                     "importance": float(f"{float(features[f]):.4g}")}
                    for i, f in enumerate(f_order.tolist()) if features[f] > 0]
    return {"node": node, "true_class": int(dataset.y[node]),
            "predicted_class": int(probs.argmax()), "probability": round(float(probs.max()), 4),
            "subgraph_nodes": int(subset.numel()), "subgraph_edges": int(edge_index.size(1)),
            "top_edges": top_edges, "top_features": top_features,
            "_edge_index": subset[edge_index], "_edge_mask": edge_mask, "_features": features}


def explain_node(model, dataset, node: int, epochs: int, top_k: int) -> dict[str, Any]:
    """GNNExplainer (PyG) on the node's subgraph: an edge and a feature mask for this node."""
    from torch_geometric.explain import Explainer, GNNExplainer

    subset, edge_index, mapping = _subgraph(model, dataset, [node])
    x = dataset.features.rows(subset).float()
    explainer = Explainer(model=model, algorithm=GNNExplainer(epochs=epochs),
                          explanation_type="model", node_mask_type="attributes",
                          edge_mask_type="object", model_config=MODEL_CONFIG)
    explanation = explainer(x, edge_index, index=int(mapping))
    return {**_summary(model, dataset, node, subset, edge_index, x, int(mapping),
                       explanation.edge_mask.detach(),
                       explanation.node_mask.detach().sum(dim=0), top_k), "explainer": "gnn"}


def explain_nodes_pg(model, dataset, nodes: Sequence[int], epochs: int, top_k: int,
                     train_nodes: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """PGExplainer (PyG): one edge-mask network, trained once on ``train_nodes`` random
    training nodes plus ``nodes`` (explaining the model's own predictions), then applied to
    every node in ``nodes`` -- amortised, unlike GNNExplainer's per-node optimisation.
    It explains edges only (no feature mask)."""
    from torch_geometric.explain import Explainer, PGExplainer

    generator = torch.Generator().manual_seed(seed)
    train = dataset.masks["train_mask"].nonzero().view(-1)
    train = train[torch.randperm(train.numel(), generator=generator)[:train_nodes]]
    fit_nodes = torch.unique(torch.cat([train, torch.as_tensor(list(nodes))]))
    subset, edge_index, positions = _subgraph(model, dataset, fit_nodes, extra_hops=0)
    x = dataset.features.rows(subset).float()
    with torch.no_grad():
        target = model(x, edge_index).argmax(-1)
    torch.manual_seed(seed)
    explainer = Explainer(model=model, algorithm=PGExplainer(epochs=epochs, lr=0.003),
                          explanation_type="phenomenon", edge_mask_type="object",
                          model_config=MODEL_CONFIG)
    for epoch in range(epochs):
        for position in positions.tolist():
            explainer.algorithm.train(epoch, model, x, edge_index, target=target, index=position)
    where = dict(zip(fit_nodes.tolist(), positions.tolist()))
    results = []
    for node in nodes:
        explanation = explainer(x, edge_index, target=target, index=where[node])
        results.append({**_summary(model, dataset, node, subset, edge_index, x, where[node],
                                   explanation.edge_mask.detach(), torch.zeros(x.size(1)),
                                   top_k), "explainer": "pg"})
    return results


EXPLAINER_NAMES = {"gnn": "GNNExplainer", "pg": "PGExplainer"}


def do_explain(model, dataset, nodes: Sequence[int], out: str, epochs: int, top_k: int,
               explainer: str = "gnn", seed: int = 0, train_nodes: int = 16) -> list[str]:
    from .observe.pictures import plot_explanation

    results = (explain_nodes_pg(model, dataset, nodes, epochs, top_k, train_nodes, seed)
               if explainer == "pg" else
               [explain_node(model, dataset, node, epochs, top_k) for node in nodes])
    written = []
    for result in results:
        node = result["node"]
        png = plot_explanation(result.pop("_edge_index"), result.pop("_edge_mask"),
                               result.pop("_features"), node,
                               os.path.join(out, f"explain_{node}.png"), top_k,
                               title=f"{EXPLAINER_NAMES[explainer]}, node {node}: true class "
                                     f"{result['true_class']}, predicted "
                                     f"{result['predicted_class']} "
                                     f"(p={result['probability']:.2f})")
        path = os.path.join(out, f"explain_{node}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        print(f"\nnode {node} ({EXPLAINER_NAMES[explainer]}): true class {result['true_class']}, "
              f"predicted {result['predicted_class']} (p={result['probability']:.2f}); "
              f"{result['subgraph_nodes']} nodes / {result['subgraph_edges']} edges explained")
        print(_table(result["top_edges"], ["rank", "source", "target", "importance"]))
        if result["top_features"]:
            print(_table(result["top_features"], ["rank", "feature", "importance"]))
        written += [png, path]
    return written


# --------------------------------------------------------------------------------- main

def inspect_run(args: argparse.Namespace) -> list[str]:
    """Do what ``args`` asks; return the files written."""
    run_dir = args.run_dir
    metrics = read_metrics(run_dir)
    out = args.out or os.path.join(run_dir, "inspect")
    wants_model = bool(args.embeddings or args.subgraph or args.explain)
    is_link = metrics.get("task") == "link"
    if is_link and wants_model:
        raise GnnZeroError("--embeddings, --subgraph and --explain show node classes; "
                           f"{run_dir} is a --task link run: use --links or --curves")
    if args.links and not is_link:
        raise GnnZeroError(f"--links draws a link-prediction run; {run_dir} is a node "
                           f"classification run: use --curves, --embeddings, --subgraph or "
                           f"--explain")
    if wants_model and (metrics.get("dataset") or {}).get("heterogeneous"):
        raise GnnZeroError(f"--embeddings, --subgraph and --explain read homogeneous graphs; "
                           f"{run_dir} trained on a heterogeneous one: use --curves")
    args.links = args.links or (is_link and not args.curves)
    if not (wants_model or args.curves or args.links):
        raise GnnZeroError("nothing to do; choose at least one of --curves, --embeddings, "
                           "--subgraph NODE, --explain NODE")
    num_nodes = (metrics.get("dataset") or {}).get("num_nodes")
    for flag, nodes in (("--subgraph", args.subgraph or []), ("--explain", args.explain or [])):
        if num_nodes is not None:
            check_nodes(nodes, num_nodes, flag)
    if args.max_points < 10:
        raise GnnZeroError(f"--max-points must be at least 10, got {args.max_points}")
    if args.hops < 1 or args.max_subgraph_nodes < 2 or args.explain_epochs < 1:
        raise GnnZeroError(f"--hops, --max-subgraph-nodes and --explain-epochs must be at least "
                           f"1, 2 and 1, got {args.hops}, {args.max_subgraph_nodes} and "
                           f"{args.explain_epochs}")
    if args.embeddings and args.method == "umap":
        from .observe.pictures import require_umap

        require_umap()                    # before the model is rebuilt
    if args.explain and read_run_config(run_dir).data.categorical:
        raise GnnZeroError("--explain perturbs x alone, and this run also embeds categorical "
                           "columns (--categorical): explanations would leave them out; use "
                           "--curves, --embeddings or --subgraph")
    ckpt = checkpoint_dir(run_dir) if wants_model else None
    os.makedirs(out, exist_ok=True)
    written: list[str] = []
    if args.curves:
        written += do_curves(metrics, run_dir, out)
    if args.links:
        written += do_links(metrics, out)
    if wants_model:
        from .engine.evaluation import layerwise_inference

        config = read_run_config(run_dir)
        dataset = load_run_dataset(config, args.data_root)
        for flag, nodes in (("--subgraph", args.subgraph or []), ("--explain", args.explain or [])):
            check_nodes(nodes, dataset.num_nodes, flag)
        model = load_run_model(config, dataset, ckpt)
        result = layerwise_inference(model, dataset, torch.device("cpu"),
                                     batch_size=args.batch_size, return_hidden=True, show=True)
        pred = result.logits.argmax(-1)
        title = f"{dataset.name} {config.model.arch}"
        if args.embeddings:
            written.append(do_embeddings(result.hidden, dataset, pred, out, args.method,
                                         args.max_points, args.seed, title))
        for node in args.subgraph or []:
            written.append(do_subgraph(node, dataset, pred, out, args.hops,
                                       args.max_subgraph_nodes, args.seed))
        if args.explain:
            written += do_explain(model, dataset, args.explain, out, args.explain_epochs,
                                  args.top_k, args.explainer, args.seed, args.pg_train_nodes)
    print("\n" + _table([{"file": f} for f in written], ["file"]))
    return written


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    inspect_run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
