"""PCA reduction of node features: fitted on a row sample, applied in chunks.

``torch.pca_lowrank`` (randomised SVD, Halko et al.) is fitted on at most
``sample_rows`` rows, so fitting never needs the whole matrix in RAM; the
projection ``(x - mean) @ V`` is then applied ``chunk_rows`` rows at a time to a
dense, sparse (scipy CSR) or memory-mapped matrix.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


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
