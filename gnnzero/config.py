"""One config tree: the sections own their defaults, help and checks; the CLI is generated.

Each section lives beside the component it configures (``data/options.py``,
``models/options.py``, ``engine/options.py``, ``engine/ds_config.py``) as a
``kw_only`` dataclass whose ``__post_init__`` refuses a bad value with one line
naming the flag.  :class:`RunConfig` adds the checks that span sections, so a
bad value anywhere is refused before any data is loaded.  A run directory keeps
the resolved tree as ``config.json``; :meth:`RunConfig.from_dict` rebuilds it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .data.options import LINK_LOADER_KINDS, DataConfig, LoaderOptions
from .engine.ds_config import EngineOverrides
from .engine.options import CheckpointConfig, EvalConfig, TrainConfig
from .errors import GnnZeroError
from .models.options import HETERO_ARCHS, ModelConfig
from .tasks.options import LINK_ONLY, TaskConfig
from .utils.settings import (SettingError, add_arguments, catalogue_rows, field_named, flag_of,
                             refuse, section_from_args)

# Section name -> its dataclass, in the order of ``--help`` and the README catalogue.
SECTIONS: dict[str, type] = {
    "task": TaskConfig, "data": DataConfig, "model": ModelConfig, "loader": LoaderOptions, "train": TrainConfig,
    "eval": EvalConfig, "checkpoint": CheckpointConfig, "engine": EngineOverrides,
}
SECTION_TITLES = {"task": "task", "data": "data", "model": "model", "loader": "mini-batches",
                  "train": "training loop", "eval": "evaluation", "checkpoint": "checkpoints",
                  "engine": "engine overrides (merged into --ds_config)"}
# Loader flags that only one kind of loader reads: given with another loader they would be
# ignored, so they are refused instead.
LOADER_SPECIFIC = {
    "num_parts": ("cluster",), "clusters_per_batch": ("cluster",),
    "batch_size": ("saint-rw", "saint-node", "saint-edge", "neighbor"),
    "walk_length": ("saint-rw",), "saint_steps": ("saint-rw", "saint-node", "saint-edge"),
    "sample_coverage": ("saint-rw", "saint-node", "saint-edge"), "num_neighbors": ("neighbor",),
}
REMOVED_FLAGS = {
    "--micro-batch": "one micro-batch is one graph mini-batch: size it with --batch-size or "
                     "--clusters-per-batch and combine batches with --grad-accum",
}
CONFIG_FILE = "config.json"
_SECTION_OF = {cls: name for name, cls in SECTIONS.items()}
DEFAULT_FAN_OUT = 10  # neighbours sampled per layer when --num-neighbors is not given


@dataclass(kw_only=True)
class RunConfig:
    """Everything one training run needs; every field checked on construction."""

    ds_config: str
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    engine: EngineOverrides = field(default_factory=EngineOverrides)
    local_rank: int = -1

    def __post_init__(self) -> None:
        self.loader.cache_dir = self.data.cache_dir  # one cache folder, set once
        if self.loader.num_neighbors is None:
            self.loader.num_neighbors = [DEFAULT_FAN_OUT] * self.model.layers
        fan_out = self.loader.num_neighbors
        if self.loader.kind == "neighbor" and len(fan_out) != self.model.layers:
            raise refuse(field_named(LoaderOptions, "num_neighbors"), fan_out,
                         f"has {len(fan_out)} entries but --layers is {self.model.layers}; "
                         f"give one fan-out per layer")
        if self.task.is_link and self.data.categorical:
            raise refuse(field_named(DataConfig, "categorical"), True,
                         "categorical columns are embedded for --task node only; drop "
                         "--categorical or use --task node")
        if self.task.is_link and self.loader.kind not in LINK_LOADER_KINDS:
            raise refuse(field_named(LoaderOptions, "kind"), self.loader.kind,
                         f"--task link trains on --loader {' / '.join(LINK_LOADER_KINDS)}; "
                         f"choose one of those")
        patience = self.train.patience
        if 0 < patience < self.eval.eval_every:
            raise refuse(field_named(TrainConfig, "patience"), patience,
                         f"must be 0 (off) or >= --eval-every ({self.eval.eval_every})")

    def check_graph_kind(self, hetero: bool) -> None:
        """Refuse settings a heterogeneous graph cannot honour (``hetero``), or
        ``--target-type`` on a homogeneous one: before any data is loaded."""
        if not hetero:
            if self.data.target_type is not None:
                raise refuse(field_named(DataConfig, "target_type"), self.data.target_type,
                             f"names a node type, but {self.data.dataset} is homogeneous; drop "
                             f"it, or give a heterogeneous graph (synthetic-hetero or a .pt "
                             f"holding a HeteroData)")
            return
        fixes = [
            (TaskConfig, "task", self.task.is_link, "link prediction has no heterogeneous "
             "path; use --task node"),
            (LoaderOptions, "kind", self.loader.kind != "neighbor", "a heterogeneous graph "
             "trains on --loader neighbor (PyG's heterogeneous NeighborLoader)"),
            (ModelConfig, "arch", self.model.arch not in HETERO_ARCHS, f"has no heterogeneous "
             f"path (to_hetero needs bipartite convolutions); choose {' or '.join(HETERO_ARCHS)}"),
            (ModelConfig, "activation_checkpointing", self.model.activation_checkpointing,
             "is not available for heterogeneous models (to_hetero's traced graph); drop it"),
            (DataConfig, "categorical", self.data.categorical, "embeds a homogeneous file's "
             "x_cat; a heterogeneous graph's types carry their own x: drop it"),
            (DataConfig, "pca_components", self.data.pca_components, "reduces a homogeneous "
             "feature matrix; drop it for a heterogeneous graph"),
            (DataConfig, "feature_store", self.data.feature_store in ("sparse", "mmap"),
             "a heterogeneous graph is held in RAM with dense x; use --feature-store auto or "
             "dense"),
            (EvalConfig, "eval_method", self.eval.eval_method in ("clusters", "layerwise"),
             "has no heterogeneous path; use auto, full-graph or sampled (the final evaluation "
             "is exact either way)"),
        ]
        for section, name, bad, fix in fixes:
            if bad:
                raise refuse(field_named(section, name),
                             getattr(getattr(self, _SECTION_OF[section]), name), fix)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> "RunConfig":
        """The config a run directory recorded (``config.json`` or ``metrics.json``'s)."""
        sections = {}
        for name, section_type in SECTIONS.items():
            values = dict(tree.get(name) or {})
            known = {f.name for f in dataclasses.fields(section_type)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise GnnZeroError(f"recorded config section '{name}' has unknown settings "
                                   f"{', '.join(unknown)}; the run was made by another gnnzero "
                                   f"version: retrain it with this one")
            sections[name] = section_type(**values)
        return cls(ds_config=tree.get("ds_config", ""), local_rank=-1, **sections)

    def save(self, run_dir: str) -> str:
        from .utils.atomic import atomic_json_dump

        path = os.path.join(run_dir, CONFIG_FILE)
        atomic_json_dump(self.as_dict(), path)
        return path


def read_run_config(run_dir: str) -> RunConfig:
    """The resolved config of a finished run (``config.json``, else ``metrics.json``'s)."""
    for name, key in ((CONFIG_FILE, None), ("metrics.json", "config")):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                tree = json.load(handle)
            return RunConfig.from_dict(tree[key] if key else tree)
    raise GnnZeroError(f"{run_dir} has no {CONFIG_FILE} or metrics.json; it is not a gnnzero "
                       f"run directory (train with --output-dir {run_dir} first)")


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage + message
        for flag, why in REMOVED_FLAGS.items():
            if flag in message:
                message = f"{flag} is not a gnnzero flag: {why}"
        self.exit(2, f"error: {message}; see `python launch/train.py --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``launch/train.py`` parser, generated from the sections' fields."""
    parser = _OneLineErrorParser(
        description="Train a GNN with DeepSpeed ZeRO on partitioned graph mini-batches. "
                    "Launch with `deepspeed launch/train.py --ds_config ds_configs/zero2.json`.")
    parser.add_argument("--ds_config", "--deepspeed_config", dest="ds_config", required=True,
                        help="DeepSpeed JSON config (ds_configs/zero{0,1,2,3}*.json)")
    parser.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    for name, section_type in SECTIONS.items():
        add_arguments(parser.add_argument_group(SECTION_TITLES[name]), section_type, f"{name}.")
    return parser


def _refuse_inapplicable_loader_flags(namespace: argparse.Namespace) -> None:
    task = getattr(namespace, "task.task", TaskConfig().task)
    for name in LINK_ONLY:
        if hasattr(namespace, f"task.{name}") and task != "link":
            flag = flag_of(field_named(TaskConfig, name))
            raise SettingError(f"{flag} applies to --task link only, not --task {task}; add "
                               f"--task link or drop it")
    if hasattr(namespace, "model.categorical_dim") and not hasattr(namespace, "data.categorical"):
        raise SettingError("--categorical-dim applies with --categorical only; add "
                           "--categorical or drop it")
    kind = getattr(namespace, "loader.kind", LoaderOptions().kind)
    for name, kinds in LOADER_SPECIFIC.items():
        if hasattr(namespace, f"loader.{name}") and kind not in kinds:
            flag = flag_of(field_named(LoaderOptions, name))
            raise SettingError(f"{flag} applies to --loader {' / '.join(kinds)} only, not "
                               f"--loader {kind}; drop it")


def parse_config(argv: Optional[Sequence[str]] = None) -> RunConfig:
    """Parse ``argv`` into a checked :class:`RunConfig` (a bad value raises ``SettingError``)."""
    namespace = build_parser().parse_args(argv)
    _refuse_inapplicable_loader_flags(namespace)
    sections = {name: section_from_args(section_type, namespace, f"{name}.")
                for name, section_type in SECTIONS.items()}
    return RunConfig(ds_config=namespace.ds_config, local_rank=namespace.local_rank, **sections)


def flag_catalogue() -> list[dict[str, str]]:
    """Every command-line flag with its default and allowed values (the README's table)."""
    rows = [{"section": "engine", "flag": "--ds_config", "default": "(required)",
             "allowed": "a JSON file", "meaning": "DeepSpeed config"}]
    for name, section_type in SECTIONS.items():
        rows += catalogue_rows(section_type, name)
    return rows


def catalogue_markdown() -> str:
    """The README's flag catalogue, generated from the sections (kept in sync by a test)."""
    from .observe.report import markdown_table

    rows = [{**r, "flag": f"`{r['flag']}`", "default": f"`{r['default']}`"}
            for r in flag_catalogue()]
    return markdown_table(rows, ["flag", "default", "allowed", "meaning"])
