"""The prepared directory: a graph written once, then memory-mapped read-only by every rank.

Layout (format version :data:`FORMAT_VERSION`), after DGL GraphBolt's ``OnDiskDataset``::

    manifest.json          counts, dtypes and shapes of every array, fingerprints, version
    indptr.npy indices.npy topology grouped by target node (see :mod:`gnnzero.data.csr`);
                           indices int32 while the node count allows
    x.npy                  dense features (float32 / float16 / bfloat16 bits as uint16), or
    x_indptr.npy x_indices.npy x_data.npy   sparse CSR features
    y.npy train_mask.npy val_mask.npy test_mask.npy
    parts/metis_<P>/       METIS partitions (see :mod:`gnnzero.data.partition`)

The directory is built under a temporary name and renamed into place
(:func:`gnnzero.utils.once.build_once`), so it exists only when complete.  Features
are written a block of rows at a time: the float matrix is never whole in RAM.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import GnnZeroError
from ..utils.once import build_once
from .csr import Topology, hash_array, index_dtype
from .feature_store import MappedCSRFeatureStore, MatrixFeatureStore, MmapFeatureStore

FORMAT = "gnnzero-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MASK_NAMES = ("train_mask", "val_mask", "test_mask")
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
CHUNK_ROWS = 65_536
PREPARE_HINT = "python -m gnnzero.prepare --dataset <name or file> --out {path}"

Blocks = Callable[[], Iterator[Any]]   # a fresh iterator of consecutive row blocks per call


@dataclass
class GraphSource:
    """A graph to prepare: topology and labels in RAM, features as row blocks."""

    name: str
    topology: Topology
    y: np.ndarray
    masks: dict[str, np.ndarray]
    num_classes: int
    num_features: int
    feature_blocks: Blocks
    sparse_features: bool
    info: dict[str, Any] = field(default_factory=dict)


def source_from_dataset(dataset, chunk_rows: int = CHUNK_ROWS) -> GraphSource:
    """A loaded :class:`~gnnzero.data.datasets.GraphDataset` as a source: its feature
    store is read a block of rows at a time (sparse stays sparse)."""
    store, n = dataset.features, dataset.num_nodes
    backend = store._store.get((None, "x"))
    sparse = sp.issparse(backend)

    def blocks() -> Iterator[Any]:
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            yield backend[start:stop] if sparse else store.rows(torch.arange(start, stop)).numpy()

    return GraphSource(dataset.name, dataset.topology, dataset.y.numpy(),
                       {m: dataset.masks[m].numpy() for m in MASK_NAMES}, dataset.num_classes,
                       dataset.num_features, blocks, sparse,
                       {k: v for k, v in dataset.info.items() if not k.startswith("_")})


def is_prepared(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


# ----------------------------------------------------------------------------- writing

def _to_storage(block: np.ndarray, storage: str) -> np.ndarray:
    if storage == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(
            torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return np.asarray(block, dtype=STORAGE_DTYPES[storage])


def _check_block(block, start: int) -> None:
    values = block.data if sp.issparse(block) else np.asarray(block)
    if values.size and not np.isfinite(values).all():
        raise GnnZeroError(f"x has NaN/inf entries in rows {start}..{start + block.shape[0] - 1}; "
                           f"clean or impute the features first")


def _check_row_count(rows: int, num_nodes: int) -> None:
    if rows != num_nodes:
        raise GnnZeroError(f"x has {rows} rows but the graph has {num_nodes} nodes; give one "
                           f"feature row per node")


def _write_dense(folder: str, source: GraphSource, storage: str) -> None:
    n, f = source.topology.num_nodes, source.num_features
    out = np.lib.format.open_memmap(os.path.join(folder, "x.npy"), mode="w+",
                                    dtype=STORAGE_DTYPES[storage], shape=(n, f))
    row = 0
    for block in source.feature_blocks():
        _check_block(block, row)
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        out[row:row + block.shape[0]] = _to_storage(block.reshape(-1, f), storage)
        row += block.shape[0]
        out.flush()        # dirty pages go to disk block by block: RSS stays one block
    del out
    _check_row_count(row, n)


def _write_sparse(folder: str, source: GraphSource, storage: str) -> None:
    """Two passes over the blocks: count non-zeros, then fill the mapped arrays."""
    n = source.topology.num_nodes
    counts = np.zeros(n, dtype=np.int64)
    row = 0
    for block in source.feature_blocks():
        block = sp.csr_matrix(block)
        counts[row:row + block.shape[0]] = np.diff(block.indptr)
        row += block.shape[0]
    _check_row_count(row, n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    del counts
    np.save(os.path.join(folder, "x_indptr.npy"), indptr)
    nnz = int(indptr[-1])
    indices = np.lib.format.open_memmap(os.path.join(folder, "x_indices.npy"), mode="w+",
                                        dtype=index_dtype(source.num_features), shape=(nnz,))
    data = np.lib.format.open_memmap(os.path.join(folder, "x_data.npy"), mode="w+",
                                     dtype=STORAGE_DTYPES[storage], shape=(nnz,))
    row = 0
    for block in source.feature_blocks():
        _check_block(block, row)
        block = sp.csr_matrix(block)
        block.sort_indices()
        lo, hi = indptr[row], indptr[row + block.shape[0]]
        indices[lo:hi] = block.indices
        data[lo:hi] = _to_storage(block.data, storage)
        row += block.shape[0]
    indices.flush()
    data.flush()


def _array_entries(folder: str) -> dict[str, dict]:
    entries = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".npy"):
            array = np.load(os.path.join(folder, name), mmap_mode="r")
            entries[name] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    return entries


def content_fingerprint(folder: str, names) -> str:
    """blake2b over every array's bytes (read in chunks)."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(names):
        digest.update(name.encode())
        hash_array(digest, np.load(os.path.join(folder, name), mmap_mode="r"))
    return digest.hexdigest()


def write_prepared(folder: str, source: GraphSource, storage: str = "float32",
                   sparse: Optional[bool] = None, num_parts: tuple[int, ...] = ()) -> None:
    """Write ``source`` into the (new, empty) ``folder``; the manifest is written last."""
    if storage not in STORAGE_DTYPES:
        raise GnnZeroError(f"feature dtype '{storage}' is unknown; choose one of "
                           f"{', '.join(STORAGE_DTYPES)}")
    topo = source.topology
    np.save(os.path.join(folder, "indptr.npy"), np.asarray(topo.indptr, dtype=np.int64))
    np.save(os.path.join(folder, "indices.npy"),
            np.asarray(topo.indices, dtype=index_dtype(topo.num_nodes)))
    np.save(os.path.join(folder, "y.npy"), np.asarray(source.y, dtype=np.int64))
    for name in MASK_NAMES:
        np.save(os.path.join(folder, f"{name}.npy"), np.asarray(source.masks[name], dtype=bool))
    sparse = source.sparse_features if sparse is None else sparse
    (_write_sparse if sparse else _write_dense)(folder, source, storage)
    arrays = _array_entries(folder)
    mapped = Topology(topo.num_nodes, np.load(os.path.join(folder, "indptr.npy"), mmap_mode="r"),
                      np.load(os.path.join(folder, "indices.npy"), mmap_mode="r"))
    topology_fingerprint = mapped.fingerprint()
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "name": source.name,
        "num_nodes": topo.num_nodes, "num_edges": topo.num_edges,
        "num_features": source.num_features, "num_classes": source.num_classes,
        "features": {"layout": "sparse" if sparse else "dense", "dtype": storage},
        "arrays": arrays, "fingerprint": content_fingerprint(folder, arrays),
        "topology_fingerprint": topology_fingerprint, "partitions": sorted(num_parts),
        "source": source.info,
    }
    with open(os.path.join(folder, MANIFEST), "w") as handle:
        json.dump(manifest, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())


def _partition(folder: str, num_parts: tuple[int, ...]) -> None:
    """METIS partitions of the written (mapped) topology, after the in-RAM source is gone."""
    from .partition import load_partition

    manifest = read_manifest(folder)
    mapped = Topology(int(manifest["num_nodes"]),
                      np.load(os.path.join(folder, "indptr.npy"), mmap_mode="r"),
                      np.load(os.path.join(folder, "indices.npy"), mmap_mode="r"),
                      _fingerprint=manifest["topology_fingerprint"])
    for parts in num_parts:
        load_partition(mapped, parts, os.path.join(folder, "parts"))


def prepare(out: str, source_factory: Callable[[], GraphSource],
            num_parts: tuple[int, ...] = (), **options) -> bool:
    """Prepare ``out`` once (True if this call wrote it); concurrent callers get one copy.

    The manifest is written before the partitions (both inside the temporary folder), so
    METIS runs after the source's arrays are freed; partitions an existing directory lacks
    are added to it."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not is_prepared(out):
        raise GnnZeroError(f"--out {out} exists but is not a prepared directory (no {MANIFEST}); "
                           f"choose a new path or remove it")

    def build(tmp: str) -> None:
        write_prepared(tmp, source_factory(), num_parts=num_parts, **options)
        _partition(tmp, num_parts)

    built = build_once(out, build, "preparing the graph", is_complete=is_prepared)
    if not built:               # an existing directory: add the part counts it lacks
        _partition(out, num_parts)
    return built


# ----------------------------------------------------------------------------- reading

def read_manifest(path: str) -> dict:
    """The manifest of ``path``, checked for format and version (one-line errors)."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise GnnZeroError(f"--dataset {path} is not a folder; prepare it with "
                           f"{PREPARE_HINT.format(path=path)}")
    if not os.path.isfile(manifest_path):
        raise GnnZeroError(f"{manifest_path} is missing: {path} is not a prepared directory "
                           f"(or its preparation did not finish); run "
                           f"{PREPARE_HINT.format(path=path)}")
    try:
        with open(manifest_path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise GnnZeroError(f"{manifest_path} is not readable JSON ({exc}); prepare the "
                           f"directory again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GnnZeroError(f"{manifest_path} is not a gnnzero manifest (format "
                           f"{manifest.get('format') if isinstance(manifest, dict) else '?'}); "
                           f"prepare the graph with {PREPARE_HINT.format(path=path)}")
    if manifest.get("version") != FORMAT_VERSION:
        raise GnnZeroError(f"{manifest_path} has format version {manifest.get('version')}, this "
                           f"gnnzero reads version {FORMAT_VERSION}; prepare the directory again "
                           f"with this version")
    return manifest


def _check_array(path: str, name: str, entry: dict) -> None:
    """``name``'s ``.npy`` header against the manifest, and its size against the header
    (a truncated file), without mapping it."""
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise GnnZeroError(f"{file} is missing; prepare the directory again")
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except (OSError, ValueError) as exc:
        raise GnnZeroError(f"{file} is truncated or corrupt ({exc}); prepare the directory "
                           f"again") from exc
    if list(shape) != entry["shape"] or str(dtype) != entry["dtype"]:
        raise GnnZeroError(f"{file} holds {dtype}{list(shape)} but the manifest says "
                           f"{entry['dtype']}{entry['shape']}; prepare the directory again")
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(file) < expected:
        raise GnnZeroError(f"{file} is truncated ({os.path.getsize(file)} of {expected} "
                           f"bytes); prepare the directory again")


def check_prepared(path: str) -> dict:
    """The manifest of the prepared directory ``path``, every array it lists checked by its
    header and size (one-line errors); nothing is mapped."""
    manifest = read_manifest(path)
    expected = {"indptr.npy", "indices.npy", "y.npy", *(f"{m}.npy" for m in MASK_NAMES)}
    missing = expected - set(manifest["arrays"])
    if missing:
        raise GnnZeroError(f"{os.path.join(path, MANIFEST)} lists no {', '.join(sorted(missing))}; "
                           f"prepare the directory again")
    for name, entry in manifest["arrays"].items():
        _check_array(path, name, entry)
    return manifest


def _map(path: str, name: str) -> np.ndarray:
    """A checked (:func:`check_prepared`) array of ``path``, mapped read-only."""
    return np.load(os.path.join(path, name), mmap_mode="r")


def mapped_tensor(array: np.ndarray) -> torch.Tensor:
    """A read-only mapped array as a tensor without a copy (torch warns that it is not
    writable; nothing writes to it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def open_prepared(path: str):
    """The prepared directory ``path`` as a :class:`~gnnzero.data.datasets.GraphDataset`
    whose arrays are all mapped read-only (shared page cache between ranks)."""
    from .datasets import GraphDataset

    path = os.path.abspath(path)
    manifest = check_prepared(path)
    arrays = {name: _map(path, name) for name in manifest["arrays"]}
    n = int(manifest["num_nodes"])
    topology = Topology(n, arrays["indptr.npy"], arrays["indices.npy"],
                        _fingerprint=manifest["topology_fingerprint"])
    features = _feature_store(path, manifest)
    masks = {m: mapped_tensor(arrays[f"{m}.npy"]) for m in MASK_NAMES}
    info = {"prepared_dir": path, "manifest_fingerprint": manifest["fingerprint"],
            "partitions_dir": os.path.join(path, "parts"), "source": manifest.get("source", {})}
    return GraphDataset(manifest["name"], topology, mapped_tensor(arrays["y.npy"]), masks,
                        features, int(manifest["num_classes"]), info)


def _feature_store(path: str, manifest: dict) -> MatrixFeatureStore:
    spec = manifest["features"]
    if spec["layout"] == "dense":
        store = MmapFeatureStore(path)
        store.map_file(os.path.join(path, "x.npy"), spec["dtype"])
        return store
    store = MappedCSRFeatureStore()
    store.map_files(*(os.path.join(path, f"x_{p}.npy") for p in ("indptr", "indices", "data")),
                    shape=(int(manifest["num_nodes"]), int(manifest["num_features"])),
                    storage=spec["dtype"])
    return store
