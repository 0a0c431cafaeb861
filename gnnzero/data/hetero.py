"""Heterogeneous graphs: a user's ``HeteroData`` file or the synthetic paper/author graph,
as a :class:`HeteroGraphDataset` with one target node type, and rank-sharded neighbour
sampling over it.

Batches are PyG ``HeteroData`` from ``NeighborLoader``; the target type's first
``batch_size`` rows carry the loss (``loss_mask``) and ``batch.target_type`` names the
type whose labels the task reads (:func:`gnnzero.engine.batches.labelled_store`).
Models come from ``torch_geometric.nn.to_hetero`` (gnnzero/models/hetero.py).

User file format (``--dataset PATH.pt`` holding a ``HeteroData``): every node type has
float ``x`` ``[N_t, F_t]``; the target type (``--target-type``, or the only type with
labels) has int ``y`` and bool ``train_mask`` / ``val_mask`` / ``test_mask``; each edge
type has ``edge_index`` ``[2, E]`` of (source-type id, destination-type id).  Messages
flow along edge types only: add reverse edge types (``torch_geometric.transforms.ToUndirected``)
for messages to reach every type.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch_geometric.data import HeteroData

from ..errors import GnnZeroError
from .csr import hash_array
from .datasets import MASK_NAMES, GraphDataset
from .sharding import shard_batches
from .validate import validate_graph

SYNTHETIC_HETERO = "synthetic-hetero"
AUTHORS_PER_PAPER = 0.25      # synthetic-hetero: authors = num_nodes // 4


@dataclass
class HeteroGraphDataset:
    """A heterogeneous graph in RAM and the node type whose labels are learned.

    It answers what the run, trainer and reports ask of a :class:`GraphDataset`
    (counts, labels, masks, fingerprint); ``num_nodes`` and ``num_edges`` count every
    type, ``y`` and ``masks`` are the target type's.
    """

    name: str
    data: HeteroData
    target: str
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    is_hetero = True
    prepared_dir = None
    link_split = None
    categorical = None

    @property
    def num_nodes(self) -> int:
        return int(self.data.num_nodes)

    @property
    def num_edges(self) -> int:
        return int(self.data.num_edges)

    @property
    def num_features(self) -> dict[str, int]:
        return {t: int(self.data[t].x.size(1)) for t in self.data.node_types}

    @property
    def y(self) -> torch.Tensor:
        return self.data[self.target].y

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {name: self.data[self.target][name] for name in MASK_NAMES}

    def fingerprint(self) -> str:
        """Content hash of the types, node counts and every edge type's edges."""
        digest = hashlib.blake2b(digest_size=8)
        for node_type in self.data.node_types:
            digest.update(f"{node_type}:{self.data[node_type].num_nodes};".encode())
        for edge_type in self.data.edge_types:
            digest.update("/".join(edge_type).encode())
            hash_array(digest, self.data[edge_type].edge_index.numpy())
        return digest.hexdigest()

    def host_parts(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(structure, features)``: the edge lists, labels and masks; every type's ``x``."""
        structure = [self.data[et].edge_index for et in self.data.edge_types]
        structure += [self.y, *self.masks.values()]
        return structure, [self.data[t].x for t in self.data.node_types]

    def summary(self) -> dict[str, Any]:
        """The dataset's entry in ``metrics.json``."""
        features = self.host_parts()[1]
        return {"name": self.name, "heterogeneous": True, "target_type": self.target,
                "num_nodes": self.num_nodes, "num_edges": self.num_edges,
                "num_features": self.num_features, "num_classes": self.num_classes,
                "node_types": {t: int(self.data[t].num_nodes) for t in self.data.node_types},
                "edge_types": {"/".join(et): int(self.data[et].num_edges)
                               for et in self.data.edge_types},
                "feature_store": "in-memory", "feature_store_bytes":
                    sum(x.numel() * x.element_size() for x in features)}


def is_hetero_source(name: str) -> bool:
    """Whether ``--dataset name`` is heterogeneous: ``synthetic-hetero`` or a ``.pt`` file
    holding a ``HeteroData`` (peeked at through a memory map, not read)."""
    if name.lower() == SYNTHETIC_HETERO:
        return True
    if not (name.endswith(".pt") and os.path.isfile(name)):
        return False
    stat = os.stat(name)
    return _holds_hetero_data(os.path.abspath(name), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _holds_hetero_data(path: str, size: int, mtime_ns: int) -> bool:
    """Whether the ``.pt`` file holds a ``HeteroData``; asked once per run start (setup and
    the dataset builder both ask), keyed by size and time so a rewritten file is read anew."""
    try:
        return isinstance(torch.load(path, weights_only=False, mmap=True), HeteroData)
    except RuntimeError:      # not a zip-format checkpoint: an old pickle, read in full later
        return isinstance(torch.load(path, weights_only=False), HeteroData)


def choose_target(data: HeteroData, target: Optional[str], source: str) -> str:
    """``target`` checked against ``data``'s node types, or the only type with labels."""
    labelled = [t for t in data.node_types if "y" in data[t]]
    if target is None:
        if len(labelled) != 1:
            raise GnnZeroError(f"{source}: {len(labelled)} node types have labels y "
                               f"({', '.join(labelled) or 'none'}); name the one to learn with "
                               f"--target-type")
        return labelled[0]
    if target not in data.node_types:
        raise GnnZeroError(f"--target-type {target} is not a node type of {source} "
                           f"({', '.join(data.node_types)}); choose one of those")
    if target not in labelled:
        raise GnnZeroError(f"--target-type {target} has no labels y in {source}; choose one of "
                           f"{', '.join(labelled) or '(none: add y to a node type)'}")
    return target


def validate_hetero(data: HeteroData, target: str, source: str) -> int:
    """Check ``data`` as the file format above asks; returns the class count."""
    try:
        for node_type in data.node_types:
            x = data[node_type].get("x")
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point()                     or x.layout != torch.strided:
                raise ValueError(f"node type '{node_type}' needs dense float features x "
                                 f"[num_nodes, F] (every type is embedded by its own first-layer "
                                 f"maps); give it x, e.g. zeros or a one-hot id")
        if not data.edge_types:
            raise ValueError("the graph has no edge types")
        for edge_type in data.edge_types:
            src, _, dst = edge_type
            edge_index = data[edge_type].get("edge_index")
            if edge_index is None:
                raise ValueError(f"edge type {'/'.join(edge_type)} has no edge_index")
            if edge_index.dtype not in (torch.int64, torch.int32) or edge_index.dim() != 2                     or edge_index.size(0) != 2:
                raise ValueError(f"edge type {'/'.join(edge_type)}: edge_index must be an "
                                 f"integer [2, E] tensor, got {edge_index.dtype} "
                                 f"{list(edge_index.shape)}")
            for row, node_type in ((0, src), (1, dst)):
                count = data[node_type].num_nodes
                ids = edge_index[row]
                if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= count):
                    raise ValueError(f"edge type {'/'.join(edge_type)}: row {row} holds ids "
                                     f"outside [0, {count}) of node type '{node_type}'")
        store = data[target]
        missing = [k for k in ("y", *MASK_NAMES) if k not in store]
        if missing:
            raise ValueError(f"node type '{target}' lacks {', '.join(missing)}")
        num_classes = int(store.y.max()) + 1
        validate_graph(torch.zeros(2, 0, dtype=torch.long), store.num_nodes, store.y.view(-1),
                       {k: store[k] for k in MASK_NAMES}, x=store.x, num_classes=num_classes)
        for node_type in data.node_types:
            validate_graph(torch.zeros(2, 0, dtype=torch.long), data[node_type].num_nodes,
                           torch.zeros(data[node_type].num_nodes), {}, x=data[node_type].x)
    except ValueError as exc:
        raise GnnZeroError(f"{source}: {exc}") from exc
    return num_classes


def load_hetero(name: str, target: Optional[str], num_nodes: int, seed: int,
                **synthetic: Any) -> HeteroGraphDataset:
    """``synthetic-hetero`` (:func:`synthetic_hetero` over the synthetic generator's graph
    of ``num_nodes`` papers, a quarter as many authors) or a user's ``HeteroData`` file."""
    from .datasets import load_synthetic

    if name.lower() == SYNTHETIC_HETERO:
        spec = {k: v for k, v in synthetic.items() if v is not None}
        papers = load_synthetic(num_nodes, seed=seed, feature_format="dense", **spec)
        data = synthetic_hetero(papers, num_authors=max(1, int(num_nodes * AUTHORS_PER_PAPER)),
                                seed=seed)
        name = SYNTHETIC_HETERO
    else:
        data = torch.load(name, weights_only=False)
        for node_type in data.node_types:   # int64 labels, bool masks, as the loss needs
            store = data[node_type]
            if "y" in store:
                store.y = store.y.long().view(-1)
        name = os.path.basename(name)
    target = choose_target(data, target, name)
    num_classes = validate_hetero(data, target, name)
    for node_type in data.node_types:
        data[node_type].x = data[node_type].x.float()
    return HeteroGraphDataset(name, data, target, num_classes)


def synthetic_hetero(dataset: GraphDataset, num_authors: int, papers_per_author: int = 3,
                     seed: int = 0) -> HeteroData:
    """Papers = ``dataset``'s nodes (features, labels, masks, citations); authors write papers.

    Each author writes ``papers_per_author`` papers, mostly of one class, so the
    author relation carries label signal; an author's features are the mean of
    its papers' features.  Edges exist in both directions (``writes`` /
    ``rev_writes``) so messages reach both node types.
    """
    if num_authors < 1 or papers_per_author < 1:
        raise ValueError(f"num_authors and papers_per_author must be >= 1, got {num_authors}, "
                         f"{papers_per_author}")
    rng = np.random.default_rng(seed)
    n, y = dataset.num_nodes, dataset.y.numpy()
    by_class = [np.flatnonzero(y == c) for c in range(dataset.num_classes)]
    by_class = [members for members in by_class if members.size]
    home = rng.integers(0, len(by_class), num_authors)
    author = np.repeat(np.arange(num_authors), papers_per_author)
    own = rng.random(author.size) < 0.8     # 80% of an author's papers are of its class
    home_members = [by_class[h] for h in home[author]]
    in_class = np.array([members[rng.integers(0, members.size)] for members in home_members])
    paper = np.where(own, in_class, rng.integers(0, n, author.size))
    pairs = np.unique(np.stack([author, paper]), axis=1)
    writes = torch.from_numpy(pairs.astype(np.int64))

    data = HeteroData()
    data["paper"].x = dataset.features.rows(torch.arange(n))
    data["paper"].y = dataset.y
    for name, mask in dataset.masks.items():
        data["paper"][name] = mask
    deg = torch.bincount(writes[0], minlength=num_authors).clamp(min=1).unsqueeze(1)
    author_x = torch.zeros(num_authors, data["paper"].x.size(1))
    author_x.index_add_(0, writes[0], data["paper"].x[writes[1]])
    data["author"].x = author_x / deg
    data["paper", "cites", "paper"].edge_index = dataset.edge_index
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "rev_writes", "author"].edge_index = writes.flip(0)
    return data


def schema_graph(data: HeteroData) -> HeteroData:
    """Two nodes of each type (zero features of the right widths) and one edge of each edge
    type: what :func:`~gnnzero.models.build_hetero_model` needs to initialise its lazy input
    maps, without a forward over the real graph."""
    schema = HeteroData()
    for node_type in data.node_types:
        schema[node_type].x = torch.zeros(2, data[node_type].x.size(1))
    for edge_type in data.edge_types:
        schema[edge_type].edge_index = torch.tensor([[0, 1], [1, 0]])
    return schema


class HeteroNeighborLoader:
    """PyG ``NeighborLoader`` over this rank's shard of the ``target`` type's training seeds;
    ``num_neighbors`` (per layer) applies to every edge type."""

    partition = None        # no METIS clusters (cluster evaluation is not offered)
    prefetch_safe = False   # the sampler draws from torch's global RNG

    def __init__(self, data: HeteroData, target: str, num_neighbors: list[int],
                 batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 opts: Any = None) -> None:
        from .loaders import _require_torch_sparse

        _require_torch_sparse("heterogeneous neighbour sampling")
        if target not in data.node_types:
            raise ValueError(f"target node type '{target}' is not in the graph "
                             f"({', '.join(data.node_types)})")
        self.data, self.target = data, target
        self.num_neighbors = {edge_type: num_neighbors for edge_type in data.edge_types}
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.opts = opts        # the run's LoaderOptions (the trainer reads its cache_dir)
        self.train_idx = data[target].train_mask.nonzero().view(-1)
        self.steps_per_epoch = len(self._batches(0))

    def _batches(self, epoch: int) -> list[list[int]]:
        groups = shard_batches(self.train_idx.numel(), self.world_size, self.rank,
                               self.batch_size, epoch, self.seed)
        return [g.tolist() for g in groups]

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[HeteroData]:
        from torch_geometric.loader import NeighborLoader

        # A private generator for the iterator's base seed: drawn from torch's global RNG it
        # would shift the sampler's stream on a resumed epoch (the iterator is made anew).
        loader = NeighborLoader(self.data, num_neighbors=self.num_neighbors,
                                input_nodes=(self.target, self.train_idx),
                                batch_sampler=self._batches(epoch)[start:],
                                generator=torch.Generator().manual_seed(self.seed + epoch))
        for batch in loader:
            store = batch[self.target]
            loss_mask = torch.zeros(store.num_nodes, dtype=torch.bool)
            loss_mask[:store.batch_size] = True
            store.loss_mask = loss_mask
            batch.target_type = self.target
            yield batch


def hetero_stores(data: HeteroData, feature_store):
    """``(feature_store, LocalGraphStore)`` holding ``data``'s node features and edges.

    ``feature_store`` is an empty store of ours (dense, sparse CSR or mmap); each
    node type's ``x`` goes in under ``group_name=<node type>``.  PyG's
    ``NeighborLoader`` takes the returned pair in place of ``data``, so features
    of a large heterogeneous graph can stay sparse or on disk.
    """
    from torch_geometric.distributed import LocalGraphStore

    for node_type in data.node_types:
        if "x" in data[node_type]:
            feature_store.put_tensor(data[node_type].x, group_name=node_type, attr_name="x",
                                     index=None)
    edge_index = {et: data[et].edge_index for et in data.edge_types}
    edge_id = {et: torch.arange(ei.size(1)) for et, ei in edge_index.items()}
    num_nodes = {nt: data[nt].num_nodes for nt in data.node_types}
    graph_store = LocalGraphStore.from_hetero_data(edge_id, edge_index, num_nodes,
                                                   is_sorted=False)
    return feature_store, graph_store
