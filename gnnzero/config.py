"""One config tree (data, model, train, engine) built from command-line flags."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from .data.loaders import LOADER_KINDS, LoaderOptions
from .engine.ds_config import EngineOverrides
from .models.builders import ARCHS


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    data_root: Optional[str] = None
    num_nodes: int = 20_000
    feature_store: str = "auto"
    cache_dir: str = ".cache/gnnzero"
    avg_degree: Optional[float] = None       # synthetic only; None = SyntheticSpec default
    words_per_node: Optional[float] = None   # synthetic only; None = SyntheticSpec default
    pca_components: int = 0                  # project features onto this many PCs (0 = off)


@dataclass
class ModelConfig:
    arch: str = "sage"
    hidden: int = 128
    layers: int = 2
    rank: Optional[int] = None
    share_weights: bool = False
    dropout: float = 0.5
    norm: Optional[str] = None
    jk: Optional[str] = None
    heads: int = 1
    activation_checkpointing: bool = False


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    output_dir: str = "runs/latest"
    eval_every: int = 1
    checkpoint_every: int = 0          # optimizer steps between checkpoints; 0 = each epoch end
    keep_checkpoints: int = 2
    resume: bool = False
    max_steps: int = 0                 # stop after this many optimizer steps (0 = no limit)
    no_checkpoint: bool = False
    monitor_every: int = 0             # optimizer steps between gradient/activation records
    sampled_eval_nodes: int = 0        # per-epoch validation on this many random nodes (0 = all)
    patience: int = 0                  # stop after this many epochs without a better val acc


@dataclass
class RunConfig:
    ds_config: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineOverrides = field(default_factory=EngineOverrides)
    local_rank: int = -1

    def as_dict(self) -> dict:
        return asdict(self)


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage + message
        self.exit(2, f"error: {message}; see `python launch/train.py --help`\n")


def _optional_int(text: str) -> Optional[int]:
    return None if text.lower() in ("none", "0", "") else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(
        description="Train a GNN with DeepSpeed ZeRO on partitioned graph mini-batches. "
                    "Launch with `deepspeed launch/train.py --ds_config ds_configs/zero2.json`.")
    p.add_argument("--ds_config", "--deepspeed_config", dest="ds_config", required=True,
                   help="DeepSpeed JSON config (ds_configs/zero{0,1,2,3}*.json)")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="synthetic",
                   help="synthetic | cora | citeseer | pubmed | ogbn-<name> | path/to/graph.{pt,npz}")
    d.add_argument("--data-root", default=None, help="folder with local dataset files")
    d.add_argument("--num-nodes", type=int, default=20_000, help="size of the synthetic graph")
    d.add_argument("--feature-store", default="auto", choices=["auto", "dense", "sparse", "mmap"])
    d.add_argument("--cache-dir", default=".cache/gnnzero",
                   help="METIS partitions / GraphSAINT norms / mmap features are cached here")
    d.add_argument("--avg-degree", type=float, default=None,
                   help="synthetic graph: mean node degree (default 12)")
    d.add_argument("--words-per-node", type=float, default=None,
                   help="synthetic graph: mean non-zero features per node (default 8)")
    d.add_argument("--pca-components", type=int, default=0,
                   help="replace the node features by their top K principal components "
                        "(fitted on <= 100k sampled rows, applied in chunks; 0 = off)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="sage", choices=ARCHS)
    m.add_argument("--hidden", type=int, default=128)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--rank", type=_optional_int, default=None, help="low-rank factor rank (none = dense)")
    m.add_argument("--share-weights", action="store_true", help="share hidden-to-hidden conv weights")
    m.add_argument("--dropout", type=float, default=0.5)
    m.add_argument("--norm", default=None, choices=["batch", "layer", "graph"])
    m.add_argument("--jk", default=None, choices=["last", "cat", "max"])
    m.add_argument("--heads", type=int, default=1, help="attention heads (gat)")
    m.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each GNN layer in backward to save activation memory")
    l = p.add_argument_group("mini-batches")
    l.add_argument("--loader", default="cluster", choices=LOADER_KINDS)
    l.add_argument("--num-parts", type=int, default=0, help="METIS parts (0 = ~500 nodes each)")
    l.add_argument("--clusters-per-batch", type=int, default=4)
    l.add_argument("--batch-size", type=int, default=2000,
                   help="GraphSAINT budget / random-walk roots, or neighbor seeds per batch")
    l.add_argument("--walk-length", type=int, default=2)
    l.add_argument("--saint-steps", type=int, default=0)
    l.add_argument("--sample-coverage", type=int, default=20)
    l.add_argument("--num-neighbors", type=lambda s: [int(v) for v in s.split(",")],
                   default=[10, 10], help="comma-separated fan-out per layer")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--output-dir", default="runs/latest")
    t.add_argument("--eval-every", type=int, default=1, help="epochs between validation passes")
    t.add_argument("--checkpoint-every", type=int, default=0,
                   help="optimizer steps between checkpoints (0 = at each epoch end)")
    t.add_argument("--keep-checkpoints", type=int, default=2)
    t.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoints")
    t.add_argument("--resume", action="store_true", help="resume from OUTPUT_DIR/checkpoints")
    t.add_argument("--max-steps", type=int, default=0, help="stop after N optimizer steps")
    t.add_argument("--monitor-every", type=int, default=0,
                   help="every N optimizer steps write per-layer gradient norms and activation "
                        "stats to OUTPUT_DIR/monitor/*.csv (0 = off)")
    t.add_argument("--sampled-eval-nodes", type=int, default=0,
                   help="per-epoch validation on N random validation nodes with a 95%% "
                        "interval (0 = every node); the final evaluation is always exact")
    t.add_argument("--patience", type=int, default=0,
                   help="early stopping: end training once N epochs pass without a better "
                        "validation accuracy (0 = run every epoch); metrics' best_val gives the "
                        "test accuracy at the best epoch")
    e = p.add_argument_group("engine overrides (on top of --ds_config)")
    e.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=None)
    e.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    e.add_argument("--grad-accum", type=int, default=None,
                   help="graph mini-batches per optimizer step")
    e.add_argument("--micro-batch", type=int, default=None)
    e.add_argument("--grad-clip", type=float, default=None)
    e.add_argument("--offload", choices=["none", "optimizer", "optimizer+params"], default=None)
    e.add_argument("--lr", type=float, default=None)
    e.add_argument("--weight-decay", type=float, default=None)
    return p


def parse_config(argv: Optional[Sequence[str]] = None) -> RunConfig:
    """Parse ``argv`` into a :class:`RunConfig`."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.pca_components < 0:
        parser.error(f"--pca-components must be >= 0 (0 = off), got {a.pca_components}")
    if a.eval_every < 1:
        parser.error(f"--eval-every must be >= 1, got {a.eval_every}")
    if a.patience < 0 or 0 < a.patience < a.eval_every:
        parser.error(f"--patience must be 0 (off) or >= --eval-every ({a.eval_every}), "
                     f"got {a.patience}")
    return RunConfig(
        ds_config=a.ds_config,
        local_rank=a.local_rank,
        data=DataConfig(a.dataset, a.data_root, a.num_nodes, a.feature_store, a.cache_dir,
                        a.avg_degree, a.words_per_node, a.pca_components),
        model=ModelConfig(a.model, a.hidden, a.layers, a.rank, a.share_weights, a.dropout, a.norm,
                          a.jk, a.heads, a.activation_checkpointing),
        loader=LoaderOptions(a.loader, a.num_parts, a.clusters_per_batch, a.batch_size,
                             a.walk_length, a.saint_steps, a.sample_coverage, a.num_neighbors,
                             a.cache_dir),
        train=TrainConfig(a.epochs, a.seed, a.output_dir, a.eval_every, a.checkpoint_every,
                          a.keep_checkpoints, a.resume, a.max_steps, a.no_checkpoint,
                          monitor_every=a.monitor_every, sampled_eval_nodes=a.sampled_eval_nodes,
                          patience=a.patience),
        engine=EngineOverrides(a.zero_stage, a.precision, a.micro_batch, a.grad_accum,
                               a.grad_clip, a.offload, a.lr, a.weight_decay),
    )
