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
* optional ``num_classes``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from ..errors import GnnZeroError
from .feature_store import FEATURE_STORES, MatrixFeatureStore
from .synthetic import SyntheticSpec, make_synthetic_graph
from .validate import validate_graph

PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
MASK_NAMES = ("train_mask", "val_mask", "test_mask")


@dataclass
class GraphDataset:
    """A node-classification graph whose features live in a feature store."""

    name: str
    edge_index: torch.Tensor
    num_nodes: int
    y: torch.Tensor
    masks: dict[str, torch.Tensor]
    features: MatrixFeatureStore
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return int(self.features.shape("x")[1])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.size(1))

    def structure(self) -> Data:
        """Structure-only ``Data`` (edges + global node ids) for partitioners and samplers."""
        return Data(edge_index=self.edge_index, num_nodes=self.num_nodes,
                    n_id=torch.arange(self.num_nodes))

    def fingerprint(self) -> str:
        """Content hash of the structure: the cache key for partitions and norms.

        Hashes the edge_index buffer in place (no ``tobytes()`` copy: 1.3 GB at
        80M edges) and remembers the result.
        """
        cached = self.info.get("_fingerprint")
        if cached is None:
            digest = hashlib.blake2b(digest_size=8)
            digest.update(np.int64(self.num_nodes).tobytes())
            digest.update(np.ascontiguousarray(self.edge_index.numpy()))
            cached = self.info["_fingerprint"] = digest.hexdigest()
        return cached

    def node_fields(self, n_id: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features, labels and masks of the nodes ``n_id`` (global ids)."""
        out = {"x": self.features.rows(n_id), "y": self.y[n_id]}
        out.update({name: mask[n_id] for name, mask in self.masks.items()})
        return out


def _make_store(x, feature_format: str, cache_dir: Optional[str], name: str) -> MatrixFeatureStore:
    if feature_format == "auto":
        density = x.nnz / max(1, x.shape[0] * x.shape[1]) if sp.issparse(x) else 1.0
        feature_format = "sparse" if density < 0.1 else "dense"
    if feature_format not in FEATURE_STORES:
        raise GnnZeroError(f"unknown --feature-store '{feature_format}'; choose one of "
                           f"auto, {', '.join(FEATURE_STORES)}")
    if feature_format == "mmap":
        directory = os.path.join(cache_dir or tempfile.mkdtemp(prefix="gnnzero-mmap-"),
                                 f"{name}-features")
        store = FEATURE_STORES["mmap"](directory)
    else:
        store = FEATURE_STORES[feature_format]()
    store.put_tensor(x, group_name=None, attr_name="x", index=None)
    return store


def _finish(name: str, edge_index, x, y, masks, num_classes: Optional[int], feature_format: str,
            cache_dir: Optional[str], info: Optional[dict] = None) -> GraphDataset:
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
    store = _make_store(x, feature_format, cache_dir, name)
    return GraphDataset(name, edge_index, num_nodes, y, masks, store, num_classes, info or {})


def load_synthetic(num_nodes: int, seed: int = 0, feature_format: str = "auto",
                   cache_dir: Optional[str] = None, **spec_kwargs) -> GraphDataset:
    """The generated default dataset (deterministic for a given size and seed)."""
    spec = SyntheticSpec(num_nodes=num_nodes, seed=seed, **spec_kwargs)
    edge_index, x, y, masks = make_synthetic_graph(spec)
    return _finish("synthetic", edge_index, x, y, masks, spec.num_classes, feature_format,
                   cache_dir, info={"spec": spec.__dict__})


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
                   int(data.y.max()) + 1, feature_format, None)


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
    dataset = PygNodePropPredDataset(name, root=root)
    data, split = dataset[0], dataset.get_idx_split()
    masks = {}
    for key, mask_name in (("train", "train_mask"), ("valid", "val_mask"), ("test", "test_mask")):
        mask = torch.zeros(data.num_nodes, dtype=torch.bool)
        mask[split[key]] = True
        masks[mask_name] = mask
    return _finish(name, data.edge_index, data.x, data.y.view(-1), masks, dataset.num_classes,
                   feature_format, None)


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


def load_user_file(path: str, feature_format: str = "auto",
                   cache_dir: Optional[str] = None) -> GraphDataset:
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
    return _finish(os.path.basename(path), torch.as_tensor(np.asarray(raw["edge_index"])), x,
                   torch.as_tensor(np.asarray(raw["y"])), masks, num_classes, feature_format,
                   cache_dir)


def check_dataset_source(name: str, data_root: Optional[str]) -> None:
    """Fail fast (before DeepSpeed starts) on an unknown dataset name or a missing root."""
    key = name.lower()
    if key == "synthetic":
        return
    if key in PLANETOID_NAMES or key.startswith("ogbn-"):
        if not data_root:
            raise GnnZeroError(f"--dataset {name} needs --data-root pointing at local files "
                               f"(nothing is downloaded at run time)")
        if not os.path.isdir(data_root):
            raise GnnZeroError(f"--data-root {data_root} is not a folder; point it at the folder "
                               f"that holds the {name} files")
        if key in PLANETOID_NAMES:
            find_planetoid_raw(PLANETOID_NAMES[key], data_root)
        return
    if key.endswith((".pt", ".npz")) or os.path.sep in name:
        if not os.path.exists(name):
            raise GnnZeroError(f"--dataset {name} does not exist; give a .pt/.npz file or one of "
                               f"synthetic, cora, citeseer, pubmed, ogbn-*")
        return
    raise GnnZeroError(f"unknown --dataset '{name}'; choose synthetic, cora, citeseer, pubmed, "
                       f"ogbn-<name>, or a path to a .pt/.npz file")


def load_dataset(name: str, data_root: Optional[str] = None, num_nodes: int = 20_000,
                 seed: int = 0, feature_format: str = "auto",
                 cache_dir: Optional[str] = None, avg_degree: Optional[float] = None,
                 words_per_node: Optional[float] = None) -> GraphDataset:
    """Load a dataset by name (``synthetic``, a Planetoid name, ``ogbn-*``) or file path.

    ``avg_degree`` / ``words_per_node`` size the synthetic graph (``None``: the
    :class:`SyntheticSpec` defaults) and are ignored for other datasets.
    """
    check_dataset_source(name, data_root)
    key = name.lower()
    if key == "synthetic":
        spec_kwargs = {k: v for k, v in (("avg_degree", avg_degree),
                                         ("words_per_node", words_per_node)) if v is not None}
        if spec_kwargs.get("avg_degree", 1.0) <= 0 or spec_kwargs.get("words_per_node", 1.0) < 1:
            raise GnnZeroError(f"avg_degree must be > 0 and words_per_node >= 1, got "
                               f"{avg_degree} and {words_per_node}")
        return load_synthetic(num_nodes, seed=seed, feature_format=feature_format,
                              cache_dir=cache_dir, **spec_kwargs)
    if key in PLANETOID_NAMES:
        return load_planetoid(key, data_root, feature_format)
    if key.startswith("ogbn-"):
        return load_ogb(key, data_root, feature_format)
    return load_user_file(name, feature_format, cache_dir)  # check_dataset_source: a file
