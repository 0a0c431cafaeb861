"""PCA reduction of node features: fitted on a row sample, applied in chunks.

``torch.pca_lowrank`` (randomised SVD, Halko et al.) is fitted on at most
``sample_rows`` rows, so fitting never needs the whole matrix in RAM; the
projection ``(x - mean) @ V`` is then applied ``chunk_rows`` rows at a time to a
dense, sparse (scipy CSR) or memory-mapped matrix.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..errors import GnnZeroError
from .feature_store import DenseFeatureStore, MmapFeatureStore, MatrixFeatureStore

if TYPE_CHECKING:
    from .datasets import GraphDataset


def _dense_rows(x: Any, rows: Any) -> Tensor:
    block = x[rows]
    if sp.issparse(block):
        block = block.toarray()
    return torch.as_tensor(np.asarray(block, dtype=np.float32))


class ChunkedPCA:
    """``fit`` on a sample with ``torch.pca_lowrank``; ``transform`` in row chunks."""

    def __init__(self, num_components: int, sample_rows: int = 100_000, niter: int = 4,
                 oversample: int = 10, chunk_rows: int = 65_536, seed: int = 0) -> None:
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.num_components = num_components
        self.sample_rows, self.niter, self.oversample = sample_rows, niter, oversample
        self.chunk_rows, self.seed = chunk_rows, seed
        self.mean: Optional[Tensor] = None
        self.components: Optional[Tensor] = None      # [F, k], orthonormal columns

    def fit(self, x: Any) -> "ChunkedPCA":
        """Fit on ``min(sample_rows, N)`` uniformly sampled rows of ``x`` (``[N, F]``)."""
        num_rows, num_cols = x.shape
        k = self.num_components
        if k > min(num_rows, num_cols):
            raise ValueError(f"num_components={k} exceeds min(rows, features)="
                             f"{min(num_rows, num_cols)}")
        rng = np.random.default_rng(self.seed)
        rows = np.arange(num_rows) if num_rows <= self.sample_rows else \
            np.sort(rng.choice(num_rows, self.sample_rows, replace=False))
        sample = _dense_rows(x, rows).double()
        self.mean = sample.mean(dim=0)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)        # pca_lowrank draws from the global RNG
        q = min(k + self.oversample, *sample.shape)
        _, _, v = torch.pca_lowrank(sample - self.mean, q=q, center=False, niter=self.niter)
        torch.random.set_rng_state(generator_state)
        self.components = v[:, :k].contiguous()
        return self

    def transform_chunks(self, x: Any) -> Iterator[Tensor]:
        """Projected ``[rows, k]`` float32 blocks of ``x``, ``chunk_rows`` at a time."""
        if self.components is None:
            raise ValueError("ChunkedPCA is not fitted; call fit(x) first")
        for start in range(0, x.shape[0], self.chunk_rows):
            block = _dense_rows(x, slice(start, start + self.chunk_rows)).double()
            yield ((block - self.mean) @ self.components).float()

    def transform(self, x: Any) -> Tensor:
        """The whole projection ``[N, k]`` (k columns only, built chunk by chunk)."""
        return torch.cat(list(self.transform_chunks(x)), dim=0)

    def fit_transform(self, x: Any) -> Tensor:
        return self.fit(x).transform(x)


class _StoreRows:
    """``x.shape`` / ``x[rows]`` over a feature store, so ChunkedPCA reads it in row blocks
    without materialising the whole matrix (mmap features may exceed RAM)."""

    def __init__(self, store: MatrixFeatureStore) -> None:
        self.store, self.shape = store, tuple(store.shape("x"))

    def __getitem__(self, rows: Any) -> Tensor:
        if isinstance(rows, slice):
            rows = torch.arange(*rows.indices(self.shape[0]))
        return self.store.rows(torch.as_tensor(rows, dtype=torch.long))


def _prepared_projection(dataset: "GraphDataset", source: _StoreRows, num_components: int,
                         seed: int) -> MatrixFeatureStore:
    """The projection of a prepared directory's features, written once beside them (one
    process fits and writes; the others wait and map the file)."""
    from ..utils.once import build_once

    target = os.path.join(dataset.prepared_dir, f"pca{num_components}_seed{seed}")
    if not os.path.isdir(target) and not os.access(dataset.prepared_dir, os.W_OK):
        raise GnnZeroError(f"--pca-components writes its projection into {dataset.prepared_dir}, "
                           f"which is read-only; prepare a writable copy or drop the flag")

    def build(tmp: str) -> None:
        pca = ChunkedPCA(num_components, seed=seed).fit(source)
        MmapFeatureStore(tmp).put_chunks(pca.transform_chunks(source), dataset.num_nodes,
                                         num_components)

    build_once(target, build, f"PCA of the features to {num_components} components")
    store = MmapFeatureStore(target)
    store.map_file(os.path.join(target, "node__x.npy"))
    return store


def reduce_features(dataset: "GraphDataset", num_components: int,
                    seed: int = 0) -> "GraphDataset":
    """``dataset`` with its features replaced by their top ``num_components`` principal
    components (fitted on up to 100k sampled rows).  A prepared directory's features stay
    on disk: the projection is written beside them once, chunk by chunk, and mapped."""
    num_features = dataset.num_features
    if not 1 <= num_components <= min(num_features, dataset.num_nodes):
        raise GnnZeroError(f"--pca-components {num_components} is out of range for "
                           f"{dataset.name} ({num_features} features, {dataset.num_nodes} "
                           f"nodes); choose 1..{min(num_features, dataset.num_nodes)}, or 0 to "
                           f"keep the raw features")
    source = _StoreRows(dataset.features)
    if dataset.prepared_dir:
        store = _prepared_projection(dataset, source, num_components, seed)
    else:
        store = DenseFeatureStore()
        pca = ChunkedPCA(num_components, seed=seed).fit(source)
        store.put_tensor(pca.transform(source), group_name=None, attr_name="x", index=None)
    info = {**dataset.info, "pca": {"components": num_components,
                                    "raw_features": num_features}}
    return dataclasses.replace(dataset, features=store, info=info)
