"""Datasets: synthetic (default), Planetoid, OGB node property, and users' own files.

Every dataset becomes a :class:`GraphDataset`: the graph structure and labels
as tensors, the node features in a feature store (dense, sparse CSR or
memory-mapped), validated on load.

User file format (``--dataset PATH`` ending in ``.pt`` or ``.npz``):

* ``edge_index``: int array ``[2, E]`` (directed pairs; add both directions for
  an undirected graph);
* ``x``: float ``[N, F]`` dense, *or* a ``torch.sparse`` tensor (``.pt``), *or*
  for ``.npz`` the CSR triplet ``x_data``, ``x_indices``, ``x_indptr`` plus
  ``x_shape``;
* ``y``: int ``[N]``;  ``train_mask``, ``val_mask``, ``test_mask``: bool ``[N]``;
* optional ``num_classes``;
* optional ``x_cat``: int ``[N, C]``, integer-encoded categorical columns (any values per
  column); embedded inside the model with ``--categorical`` (``EmbeddingBag``), never
  one-hot.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from ..errors import GnnZeroError
from .csr import Topology
from .feature_store import FEATURE_STORES, SPARSE_BATCH_DENSITY, MatrixFeatureStore
from .prepared import (FORMAT_VERSION, check_prepared, open_prepared, prepare,
                       source_from_dataset)
from .synthetic import SyntheticSpec, make_synthetic_graph
from .validate import validate_graph

PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
# Shchur et al. 2018 graphs: --dataset name -> (PyG class, its name argument, raw file)
GNN_BENCHMARK = {"amazon-computers": ("Amazon", "Computers", "amazon_electronics_computers.npz"),
                 "amazon-photo": ("Amazon", "Photo", "amazon_electronics_photo.npz"),
                 "coauthor-cs": ("Coauthor", "CS", "ms_academic_cs.npz"),
                 "coauthor-physics": ("Coauthor", "Physics", "ms_academic_phy.npz")}
TRAIN_PER_CLASS, VAL_PER_CLASS = 20, 30   # Shchur et al.'s split; the rest is test
MASK_NAMES = ("train_mask", "val_mask", "test_mask")


@dataclass
class GraphDataset:
    """A node-classification graph: topology grouped by target node (possibly mapped from a
    prepared directory), labels, masks, and features in a feature store."""

    name: str
    topology: Topology
    y: torch.Tensor
    masks: dict[str, torch.Tensor]
    features: MatrixFeatureStore
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    # A sparse store's batch rows stay a torch CSR tensor below this density (0 = dense).
    sparse_batch_density: float = SPARSE_BATCH_DENSITY
    # Link prediction: the hidden-edge split (data/link_split.py); the topology is then the
    # training graph, without the validation and test edges.
    link_split: Any = None
    # Categorical columns as ids into one shared table ([N, C] int64, data/categorical.py)
    # and the table's rows; None without categorical columns.
    categorical: Optional[torch.Tensor] = None
    categorical_vocabulary: int = 0

    @property
    def num_nodes(self) -> int:
        return self.topology.num_nodes

    @property
    def num_features(self) -> int:
        return int(self.features.shape("x")[1])

    @property
    def num_edges(self) -> int:
        return self.topology.num_edges

    @property
    def prepared_dir(self) -> Optional[str]:
        return self.info.get("prepared_dir")

    @property
    def edge_index(self) -> torch.Tensor:
        """``[2, E]`` int64, built once from the topology: a private copy of the whole edge
        list, for the small-graph paths (full-graph batches, PyG samplers, inspection)."""
        cached = self.info.get("_edge_index")
        if cached is None:
            cached = self.info["_edge_index"] = self.topology.edge_index()
        return cached

    def structure(self) -> Data:
        """Structure-only ``Data`` (edges + global node ids) for PyG's samplers."""
        return Data(edge_index=self.edge_index, num_nodes=self.num_nodes,
                    n_id=torch.arange(self.num_nodes))

    def fingerprint(self) -> str:
        """Content hash of the structure: the cache key for partitions and norms."""
        return self.topology.fingerprint()

    def batch_features(self, n_id: torch.Tensor) -> torch.Tensor:
        """Feature rows of ``n_id`` as a batch carries them: sparse (torch CSR) from a sparse
        store below :attr:`sparse_batch_density`, else dense."""
        return self.features.batch_rows(n_id, self.sparse_batch_density)

    def node_fields(self, n_id: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features, labels and masks of the nodes ``n_id`` (global ids)."""
        out = {"x": self.batch_features(n_id), "y": self.y[n_id]}
        out.update({name: mask[n_id] for name, mask in self.masks.items()})
        if self.categorical is not None:
            out["x_cat"] = self.categorical[n_id]
        return out


def _make_store(x, feature_format: str) -> MatrixFeatureStore:
    if feature_format == "auto":
        density = x.nnz / max(1, x.shape[0] * x.shape[1]) if sp.issparse(x) else 1.0
        feature_format = "sparse" if density < 0.1 else "dense"
    if feature_format not in FEATURE_STORES:
        raise GnnZeroError(f"unknown --feature-store '{feature_format}'; choose one of "
                           f"auto, {', '.join(FEATURE_STORES)}")
    if feature_format == "mmap":    # load_dataset maps a prepared directory instead
        raise GnnZeroError("mmap features come from a prepared directory: use load_dataset "
                           "(which prepares one in --cache-dir) or python -m gnnzero.prepare")
    store = FEATURE_STORES[feature_format]()
    store.put_tensor(x, group_name=None, attr_name="x", index=None)
    return store


def _finish(name: str, edge_index, x, y, masks, num_classes: Optional[int], feature_format: str,
            info: Optional[dict] = None) -> GraphDataset:
    edge_index = torch.as_tensor(edge_index)
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must hold integer node ids, got {edge_index.dtype}; "
                         f"convert it with .long() / .astype(np.int64)")
    edge_index = edge_index.long()  # no copy when already int64
    y = torch.as_tensor(y).long().view(-1)
    masks = {k: torch.as_tensor(v).bool().view(-1) for k, v in masks.items()}
    num_nodes = int(x.shape[0])
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.numel() else 0
    validate_graph(edge_index, num_nodes, y, masks, x=x, num_classes=num_classes)
    store = _make_store(x, feature_format)
    topology = Topology.from_edge_index(edge_index, num_nodes)
    return GraphDataset(name, topology, y, masks, store, num_classes, info or {})


def load_synthetic(num_nodes: int, seed: int = 0, feature_format: str = "auto",
                   **spec_kwargs) -> GraphDataset:
    """The generated default dataset (deterministic for a given size and seed)."""
    spec = SyntheticSpec(num_nodes=num_nodes, seed=seed, **spec_kwargs)
    edge_index, x, y, masks = make_synthetic_graph(spec)
    return _finish("synthetic", edge_index, x, y, masks, spec.num_classes, feature_format,
                   info={"spec": spec.__dict__})


def find_planetoid_raw(proper: str, root: str) -> str:
    """The folder under ``root`` holding the 8 Planetoid raw files of ``proper`` (e.g. Cora)."""
    raw_names = [f"ind.{proper.lower()}.{s}" for s in
                 ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")]
    candidates = [os.path.join(root, proper, "raw"), os.path.join(root, "raw"), root]
    raw_dir = next((c for c in candidates
                    if all(os.path.exists(os.path.join(c, f)) for f in raw_names)), None)
    if raw_dir is None:
        raise GnnZeroError(f"--data-root {root} has no {proper} raw files (expected "
                           f"{proper}/raw/{raw_names[0]} and 7 more); point --data-root at the "
                           f"folder that holds {proper}/raw")
    return raw_dir


def load_planetoid(name: str, root: str, feature_format: str = "auto") -> GraphDataset:
    """Planetoid from local raw files in ``root/<Name>/raw`` (never downloads).

    The raw files are copied to a temporary folder first because PyG writes a
    ``processed/`` folder beside ``raw/``; features are row-normalised as in
    the GCN paper (``NormalizeFeatures``).
    """
    from torch_geometric.datasets import Planetoid
    from torch_geometric.transforms import NormalizeFeatures

    proper = PLANETOID_NAMES[name.lower()]
    raw_dir = find_planetoid_raw(proper, root)
    tmp = tempfile.mkdtemp(prefix="gnnzero-planetoid-")
    try:
        shutil.copytree(raw_dir, os.path.join(tmp, proper, "raw"))
        data = Planetoid(tmp, proper, transform=NormalizeFeatures())[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    masks = {k: data[k] for k in MASK_NAMES}
    return _finish(proper, data.edge_index, sp.csr_matrix(data.x.numpy()) if
                   feature_format in ("auto", "sparse") else data.x, data.y, masks,
                   int(data.y.max()) + 1, feature_format)


def find_gnn_benchmark_raw(name: str, root: str) -> str:
    """The raw ``.npz`` of gnn-benchmark graph ``name`` under ``root`` (``root/<file>``,
    ``root/raw/<file>`` or PyG's ``root/<Name>/raw/<file>``)."""
    _, proper, file = GNN_BENCHMARK[name]
    candidates = [os.path.join(root, file), os.path.join(root, "raw", file),
                  os.path.join(root, proper, "raw", file)]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise GnnZeroError(f"--data-root {root} has no {file} (looked for {candidates[0]} and "
                           f"{proper}/raw/{file}); point --data-root at the folder that holds it")
    return found


def per_class_split(y: torch.Tensor, num_classes: int, seed: int,
                    train_per_class: int = TRAIN_PER_CLASS,
                    val_per_class: int = VAL_PER_CLASS) -> dict[str, torch.Tensor]:
    """Shchur et al.'s protocol: per class, ``train_per_class`` random training and
    ``val_per_class`` validation nodes, all other nodes test; drawn from ``seed``.  A class
    with fewer nodes fills training first.  (PyG's ``RandomNodeSplit`` draws the validation
    set over all classes, not per class, hence this.)"""
    rng = np.random.default_rng(seed)
    masks = {k: torch.zeros(y.numel(), dtype=torch.bool) for k in MASK_NAMES}
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(y.numpy() == c))
        masks["train_mask"][members[:train_per_class]] = True
        masks["val_mask"][members[train_per_class:train_per_class + val_per_class]] = True
    masks["test_mask"] = ~(masks["train_mask"] | masks["val_mask"])
    return masks


def load_gnn_benchmark(name: str, root: str, seed: int = 0,
                       feature_format: str = "auto") -> GraphDataset:
    """Amazon Computers/Photo or Coauthor CS/Physics through PyG's ``Amazon`` / ``Coauthor``
    classes from the local raw ``.npz`` (never downloads): binary bag-of-words features,
    undirected edges, the largest connected component, and :func:`per_class_split` of
    ``seed``."""
    import torch_geometric.datasets as pyg_datasets
    from torch_geometric.transforms import LargestConnectedComponents

    cls_name, proper, file = GNN_BENCHMARK[name]
    raw = find_gnn_benchmark_raw(name, root)
    tmp = tempfile.mkdtemp(prefix="gnnzero-gnn-benchmark-")
    try:
        os.makedirs(os.path.join(tmp, proper, "raw"))
        shutil.copy(raw, os.path.join(tmp, proper, "raw", file))
        data = getattr(pyg_datasets, cls_name)(tmp, proper)[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data = LargestConnectedComponents()(data)
    num_classes = int(data.y.max()) + 1
    x = sp.csr_matrix(data.x.numpy()) if feature_format in ("auto", "sparse") else data.x
    return _finish(name, data.edge_index, x, data.y, per_class_split(data.y, num_classes, seed),
                   num_classes, feature_format, info={"split": f"{TRAIN_PER_CLASS}/"
                                                      f"{VAL_PER_CLASS} per class, seed {seed}"})


def load_ogb(name: str, root: str, feature_format: str = "auto") -> GraphDataset:
    """An OGB node-property dataset already present under ``root`` (needs the ``ogb`` extra)."""
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError as exc:
        raise GnnZeroError(f"--dataset {name} needs the ogb package: pip install -e '.[ogb]'") from exc
    folder = os.path.join(root, name.replace("-", "_"))
    if not os.path.isdir(folder):
        raise GnnZeroError(f"--data-root {root} has no {folder}; download {name} with the ogb "
                           f"package on a machine with internet and copy it there")
    # ogb reloads its processed file with a bare torch.load, which torch >= 2.6 restricts to
    # allow-listed types (weights_only): PyG's Data classes are allow-listed for that call.
    from torch_geometric.data.data import Data as PygData, DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    with torch.serialization.safe_globals([PygData, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
        dataset = PygNodePropPredDataset(name, root=root)
    data, split = dataset[0], dataset.get_idx_split()
    masks = {}
    for key, mask_name in (("train", "train_mask"), ("valid", "val_mask"), ("test", "test_mask")):
        mask = torch.zeros(data.num_nodes, dtype=torch.bool)
        mask[split[key]] = True
        masks[mask_name] = mask
    return _finish(name, data.edge_index, data.x, data.y.view(-1), masks, dataset.num_classes,
                   feature_format)


def _read_user_file(path: str) -> dict[str, Any]:
    if path.endswith(".npz"):
        with np.load(path) as archive:
            raw = {k: archive[k] for k in archive.files}
        if "x" not in raw and "x_data" in raw:
            raw["x"] = sp.csr_matrix((raw.pop("x_data"), raw.pop("x_indices"), raw.pop("x_indptr")),
                                     shape=tuple(raw.pop("x_shape")))
        return raw
    raw = torch.load(path, weights_only=False)
    if isinstance(raw, Data):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise GnnZeroError(f"{path} must hold a dict or torch_geometric Data, got {type(raw).__name__}")
    x = raw.get("x")
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        x = x.to_sparse_coo().coalesce()
        idx, val = x.indices().numpy(), x.values().numpy()
        raw["x"] = sp.csr_matrix((val, (idx[0], idx[1])), shape=tuple(x.shape))
    return raw


def load_user_file(path: str, feature_format: str = "auto") -> GraphDataset:
    """A user's graph in the documented ``.pt`` / ``.npz`` format."""
    if not os.path.exists(path):
        raise GnnZeroError(f"--dataset {path} does not exist; give a .pt/.npz file or one of "
                           f"synthetic, cora, citeseer, pubmed, ogbn-*")
    raw = _read_user_file(path)
    missing = [k for k in ("edge_index", "x", "y", *MASK_NAMES) if k not in raw]
    if missing:
        raise GnnZeroError(f"{path} lacks {', '.join(missing)}; see the file format in "
                           f"gnnzero/data/datasets.py or the README")
    x = raw["x"]
    if not sp.issparse(x):
        x = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    num_classes = int(raw["num_classes"]) if "num_classes" in raw else None
    masks = {k: torch.as_tensor(np.asarray(raw[k])) for k in MASK_NAMES}
    dataset = _finish(os.path.basename(path), torch.as_tensor(np.asarray(raw["edge_index"])), x,
                      torch.as_tensor(np.asarray(raw["y"])), masks, num_classes, feature_format)
    if "x_cat" in raw:
        _attach_categorical(dataset, path, raw["x_cat"])
    return dataset


def _attach_categorical(dataset: GraphDataset, path: str, columns) -> None:
    """Encode a file's ``x_cat`` columns into shared-table ids (``CategoricalEncoder``)."""
    from .categorical import CategoricalEncoder

    columns = np.asarray(columns.numpy() if isinstance(columns, torch.Tensor) else columns)
    if columns.ndim == 1:
        columns = columns[:, None]
    if columns.ndim != 2 or columns.shape[0] != dataset.num_nodes or \
            not np.issubdtype(columns.dtype, np.integer):
        raise GnnZeroError(f"{path}: x_cat must be an integer array [num_nodes, columns] = "
                           f"[{dataset.num_nodes}, C], got {columns.dtype} {list(columns.shape)}; "
                           f"encode each categorical column as integers")
    encoder = CategoricalEncoder()
    dataset.categorical = encoder.fit_transform(columns)
    dataset.categorical_vocabulary = encoder.num_embeddings


def _npz_header(path: str, member: str, handle) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` member open in ``handle`` (read past its header)."""
    version = np.lib.format.read_magic(handle)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(handle)
    if fortran or len(shape) != 2:
        raise GnnZeroError(f"{path}: {member} must be a C-ordered 2-d array, got shape "
                           f"{shape}{' (Fortran order)' if fortran else ''}")
    return shape, dtype


def _npz_row_blocks(path: str, member: str, chunk_rows: int) -> Iterator[np.ndarray]:
    """Row blocks of the 2-d array ``member`` of an ``.npz``, read from the zip stream (never
    the whole array: ``np.load`` has no memory map for archives)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{member}.npy") as handle:
        shape, dtype = _npz_header(path, member, handle)
        row_bytes = shape[1] * dtype.itemsize
        for start in range(0, shape[0], chunk_rows):
            rows = min(chunk_rows, shape[0] - start)
            yield np.frombuffer(handle.read(rows * row_bytes), dtype=dtype).reshape(rows, shape[1])


def user_file_source(path: str, chunk_rows: int = 65_536):
    """A user's ``.pt`` / ``.npz`` file as a prepare source whose dense features are read a
    block of rows at a time (``.pt``: memory-mapped by ``torch.load``; ``.npz``: streamed
    from the archive), so preparing never holds the dense matrix in RAM."""
    from .prepared import GraphSource

    if path.endswith(".npz"):
        with np.load(path) as archive:
            names = set(archive.files)
            raw = {k: archive[k] for k in names if k != "x"}
        if "x" not in names:
            return source_from_dataset(load_user_file(path), chunk_rows)
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as handle:
            shape = _npz_header(path, "x", handle)[0]
        blocks = lambda: _npz_row_blocks(path, "x", chunk_rows)  # noqa: E731
    else:
        raw = torch.load(path, weights_only=False, mmap=True)
        raw = raw.to_dict() if isinstance(raw, Data) else raw
        x = raw.get("x") if isinstance(raw, dict) else None
        if not isinstance(x, torch.Tensor) or x.layout != torch.strided:
            return source_from_dataset(load_user_file(path), chunk_rows)
        shape = tuple(x.shape)
        blocks = lambda: (x[s:s + chunk_rows].numpy() for s in range(0, shape[0], chunk_rows))  # noqa: E731
    missing = [k for k in ("edge_index", "y", *MASK_NAMES) if k not in raw]
    if missing:
        raise GnnZeroError(f"{path} lacks {', '.join(missing)}; see the file format in "
                           f"gnnzero/data/datasets.py or the README")
    edge_index = torch.as_tensor(np.asarray(raw["edge_index"])).long()
    y = torch.as_tensor(np.asarray(raw["y"])).long().view(-1)
    masks = {k: torch.as_tensor(np.asarray(raw[k])).bool().view(-1) for k in MASK_NAMES}
    num_classes = int(raw["num_classes"]) if "num_classes" in raw else int(y.max()) + 1
    validate_graph(edge_index, int(shape[0]), y, masks, num_classes=num_classes)
    topology = Topology.from_edge_index(edge_index, int(shape[0]))
    return GraphSource(os.path.basename(path), topology, y.numpy(),
                       {k: v.numpy() for k, v in masks.items()}, num_classes, int(shape[1]),
                       blocks, False, {"path": os.path.abspath(path)})


def _reads_data_root(key: str) -> bool:
    """Whether dataset ``key`` (lower case) is read from files under ``--data-root``."""
    return key in PLANETOID_NAMES or key in GNN_BENCHMARK or key.startswith("ogbn-")


def check_dataset_source(name: str, data_root: Optional[str]) -> None:
    """Fail fast (before DeepSpeed starts) on an unknown dataset name or a missing root."""
    key = name.lower()
    if key in ("synthetic", "synthetic-hetero"):
        return
    if os.path.isdir(name):
        check_prepared(name)    # a prepared directory: manifest, array headers and sizes
        return
    if _reads_data_root(key):
        if not data_root:
            raise GnnZeroError(f"--dataset {name} needs --data-root pointing at local files "
                               f"(nothing is downloaded at run time)")
        if not os.path.isdir(data_root):
            raise GnnZeroError(f"--data-root {data_root} is not a folder; point it at the folder "
                               f"that holds the {name} files")
        if key in PLANETOID_NAMES:
            find_planetoid_raw(PLANETOID_NAMES[key], data_root)
        if key in GNN_BENCHMARK:
            find_gnn_benchmark_raw(key, data_root)
        return
    if key.endswith((".pt", ".npz")) or os.path.sep in name:
        if not os.path.exists(name):
            raise GnnZeroError(f"--dataset {name} does not exist; give a .pt/.npz file or one of "
                               f"synthetic, cora, citeseer, pubmed, ogbn-*")
        return
    raise GnnZeroError(f"unknown --dataset '{name}'; choose synthetic, synthetic-hetero, cora, "
                       f"citeseer, pubmed, "
                       f"{', '.join(GNN_BENCHMARK)}, ogbn-<name>, a prepared directory, or a "
                       f"path to a .pt/.npz file")


# Synthetic graphs from this size on are prepared and mapped even with --feature-store auto.
AUTO_PREPARE_NODES = 500_000


def source_key(name: str, data_root: Optional[str], options: dict) -> dict:
    """What identifies a dataset's content before loading it (the prepared-cache key)."""
    key = {"dataset": name.lower(), "format_version": FORMAT_VERSION, **options}
    if _reads_data_root(name.lower()):
        key["data_root"] = os.path.abspath(data_root)
    elif name.lower() != "synthetic":
        stat = os.stat(name)
        key.update(path=os.path.abspath(name), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return key


def prepared_cache_path(cache_dir: str, name: str, key: dict) -> str:
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=6).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(name))
    return os.path.join(os.path.abspath(cache_dir), "prepared", f"{safe}-{digest}")


SYNTHETIC_OPTIONS = ("avg_degree", "words_per_node", "num_classes", "num_features", "homophily",
                     "label_noise")


def load_dataset(name: str, data_root: Optional[str] = None, num_nodes: int = 20_000,
                 seed: int = 0, feature_format: str = "auto",
                 cache_dir: Optional[str] = None, **synthetic: Any) -> GraphDataset:
    """Load a dataset by name (``synthetic``, a Planetoid name, ``ogbn-*``), file path or
    prepared directory.

    ``synthetic`` shapes the synthetic graph (:data:`SYNTHETIC_OPTIONS`; ``None`` or
    absent: the :class:`SyntheticSpec` defaults) and is ignored for other datasets.
    A prepared directory is mapped read-only.  With ``feature_format="mmap"`` (or a
    synthetic graph of :data:`AUTO_PREPARE_NODES` nodes or more) the dataset is first
    prepared into ``cache_dir`` -- once per node: concurrent ranks wait for one copy --
    and then mapped, so the ranks of a node share its pages.
    """
    if os.path.isdir(name):
        return open_prepared(name)      # what check_dataset_source would do for a directory
    check_dataset_source(name, data_root)
    unknown = set(synthetic) - set(SYNTHETIC_OPTIONS)
    if unknown:
        raise TypeError(f"unknown synthetic options {sorted(unknown)}")
    spec = {k: v for k, v in synthetic.items() if v is not None}
    if feature_format == "mmap" or (feature_format == "auto" and name.lower() == "synthetic"
                                    and num_nodes >= AUTO_PREPARE_NODES and cache_dir):
        if not cache_dir:
            raise GnnZeroError("--feature-store mmap prepares the graph into --cache-dir; give "
                               "one (or prepare it yourself with python -m gnnzero.prepare)")
        options = {"num_nodes": num_nodes, "seed": seed, **spec} \
            if name.lower() == "synthetic" else \
            {"split_seed": seed} if name.lower() in GNN_BENCHMARK else {}
        out = prepared_cache_path(cache_dir, name, source_key(name, data_root, options))
        prepare(out, lambda: source_from_dataset(load_in_memory(
            name, data_root, num_nodes, seed, **spec)))
        return open_prepared(out)
    return load_in_memory(name, data_root, num_nodes, seed, feature_format, **spec)


def load_in_memory(name: str, data_root: Optional[str], num_nodes: int, seed: int,
                   feature_format: str = "auto", **spec: Any) -> GraphDataset:
    """A named dataset or file read into RAM (what :mod:`gnnzero.prepare` writes out)."""
    spec = {k: v for k, v in spec.items() if v is not None}
    key = name.lower()
    if key == "synthetic":
        if spec.get("avg_degree", 1.0) <= 0 or spec.get("words_per_node", 1.0) < 1:
            raise GnnZeroError(f"avg_degree must be > 0 and words_per_node >= 1, got "
                               f"{spec.get('avg_degree')} and {spec.get('words_per_node')}")
        return load_synthetic(num_nodes, seed=seed, feature_format=feature_format, **spec)
    if key in PLANETOID_NAMES:
        return load_planetoid(key, data_root, feature_format)
    if key in GNN_BENCHMARK:
        return load_gnn_benchmark(key, data_root, seed, feature_format)
    if key.startswith("ogbn-"):
        return load_ogb(key, data_root, feature_format)
    return load_user_file(name, feature_format)  # check_dataset_source: a file
