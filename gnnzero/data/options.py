"""The data and mini-batch sections of the config tree: each setting once, with its range."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..utils.settings import check_settings, field_named, refuse, setting
from .feature_store import SPARSE_BATCH_DENSITY
from .synthetic import SyntheticSpec

LOADER_KINDS = ("cluster", "saint-rw", "saint-node", "saint-edge", "neighbor", "full")
LINK_LOADER_KINDS = ("full", "cluster", "neighbor")   # --task link
FEATURE_FORMATS = ("auto", "dense", "sparse", "mmap")


@dataclass(kw_only=True)
class DataConfig:
    """Which graph to train on and how its features are stored."""

    dataset: str = setting("synthetic", "the graph to train on",
                           allowed="synthetic, synthetic-hetero, cora, citeseer, pubmed, "
                                   "amazon-computers, amazon-photo, coauthor-cs, "
                                   "coauthor-physics, ogbn-<name>, a prepared directory, or a "
                                   ".pt / .npz file (a .pt may hold a HeteroData)")
    target_type: Optional[str] = setting(None, "heterogeneous graph: the node type whose labels "
                                               "are learned and evaluated",
                                         allowed="a node type of the graph",
                                         none_means="the only node type with labels y")
    data_root: Optional[str] = setting(None, "folder with local dataset files (nothing is "
                                             "downloaded)", allowed="a folder",
                                       none_means="synthetic or a file")
    num_nodes: int = setting(SyntheticSpec.num_nodes, "size of the synthetic graph", low=10)
    avg_degree: float = setting(SyntheticSpec.avg_degree, "synthetic graph: mean node degree",
                                low=0, low_open=True)
    num_classes: int = setting(SyntheticSpec.num_classes, "synthetic graph: classes", low=2)
    num_features: int = setting(SyntheticSpec.num_features, "synthetic graph: feature columns",
                                low=8)
    words_per_node: float = setting(SyntheticSpec.words_per_node,
                                    "synthetic graph: mean non-zero features per node", low=1)
    homophily: float = setting(SyntheticSpec.homophily, "synthetic graph: share of edges inside "
                                                        "a node's community", low=0, high=1)
    label_noise: float = setting(SyntheticSpec.label_noise,
                                 "synthetic graph: share of nodes whose observed label is "
                                 "redrawn at random (caps accuracy near 1 - noise * (1 - "
                                 "1/classes))", low=0, high=1)
    feature_store: str = setting("auto", "feature storage: auto = sparse CSR when < 10 % dense "
                                         "(a synthetic graph of 500k+ nodes is prepared and "
                                         "mapped), mmap = prepare the dataset into --cache-dir "
                                         "and map it; for prepare: the layout",
                                 choices=FEATURE_FORMATS)
    sparse_batch_density: float = setting(
        SPARSE_BATCH_DENSITY, "a sparse feature store's batches carry x as a torch sparse "
        "tensor, multiplied sparse-dense by the first layer, while their density is below "
        "this (0 = always dense batches)", low=0, high=1)
    cache_dir: str = setting(".cache/gnnzero", "prepared copies of named datasets, and METIS "
                                               "partitions / GraphSAINT norms of graphs not read "
                                               "from a prepared directory", allowed="a folder")
    categorical: bool = setting(False, "embed the dataset file's integer-encoded categorical "
                                       "columns (x_cat) with an EmbeddingBag inside the model, "
                                       "beside x (never one-hot); batches are then dense")
    pca_components: int = setting(0, "replace the node features by their top K principal "
                                     "components (0 = off)", low=0)

    def __post_init__(self) -> None:
        check_settings(self)

    def synthetic_options(self) -> dict:
        """The generator settings that shape the synthetic graph (empty for other datasets)."""
        if self.dataset.lower() not in ("synthetic", "synthetic-hetero"):
            return {}
        return {"num_nodes": self.num_nodes, "avg_degree": self.avg_degree,
                "words_per_node": self.words_per_node, "num_classes": self.num_classes,
                "num_features": self.num_features, "homophily": self.homophily,
                "label_noise": self.label_noise}

    def synthetic_shape(self) -> dict:
        """:meth:`synthetic_options` but the node count (the loaders take it separately)."""
        return {k: v for k, v in self.synthetic_options().items() if k != "num_nodes"}


@dataclass(kw_only=True)
class LoaderOptions:
    """How training mini-batches are formed."""

    kind: str = setting("cluster", "training mini-batches", flag="--loader", choices=LOADER_KINDS)
    num_parts: int = setting(0, "METIS parts for Cluster-GCN (0 = about 500 nodes a part)", low=0)
    clusters_per_batch: int = setting(4, "METIS parts per Cluster-GCN batch", low=1)
    batch_size: int = setting(2000, "GraphSAINT node/edge budget or random-walk roots, or "
                                    "neighbour seeds (--task link: training edges) per batch",
                              low=1)
    walk_length: int = setting(2, "GraphSAINT random-walk length", low=1)
    saint_steps: int = setting(0, "GraphSAINT steps per rank and epoch (0 = cover the graph "
                                  "once)", low=0)
    sample_coverage: int = setting(20, "GraphSAINT samples per node for the normalisation "
                                       "(0 = no normalisation)", low=0)
    num_neighbors: Optional[list[int]] = setting(None, "comma-separated neighbour fan-out per "
                                                       "layer (-1 = all), one entry per --layers",
                                                 low=-1, none_means="10 per layer")
    cache_dir: Optional[str] = setting(None, cli=False)  # = DataConfig.cache_dir in a run

    def __post_init__(self) -> None:
        check_settings(self)
        if self.num_neighbors and 0 in self.num_neighbors:
            raise refuse(field_named(LoaderOptions, "num_neighbors"), self.num_neighbors,
                         "a fan-out of 0 samples no neighbours; use a positive number or -1 "
                         "(all)")

    def resolved_num_parts(self, num_nodes: int) -> int:
        return self.num_parts or max(2, num_nodes // 500)
