"""Categorical node columns: integer-encoded and embedded, never one-hot.

A table with columns of very different cardinalities (country: 200 values,
user id: 10^6) would one-hot into millions of mostly-zero columns.  Instead
:class:`CategoricalEncoder` maps each column's values to ids in one shared
vocabulary (column offsets keep them apart; id 0 of each column is "unseen"),
and :class:`CategoricalEmbedding` sums one learned vector per column with
``torch.nn.EmbeddingBag`` -- exactly ``one_hot(x) @ W`` without building the
one-hot matrix.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


class CategoricalEncoder:
    """Fit per-column vocabularies; ``transform`` gives ``[N, C]`` int64 ids into one table."""

    def __init__(self) -> None:
        self.vocabularies: list[np.ndarray] = []
        self.offsets: Optional[np.ndarray] = None

    @property
    def num_embeddings(self) -> int:
        """Rows of the shared embedding table (every column's values plus its "unseen" id)."""
        if self.offsets is None:
            raise ValueError("CategoricalEncoder is not fitted; call fit(columns) first")
        return int(self.offsets[-1])

    def fit(self, columns: np.ndarray) -> "CategoricalEncoder":
        """Learn each column's sorted distinct values (``columns``: ``[N, C]``, any dtype)."""
        columns = _as_2d(columns)
        self.vocabularies = [np.unique(columns[:, j]) for j in range(columns.shape[1])]
        sizes = [v.size + 1 for v in self.vocabularies]   # +1: the "unseen" id
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return self

    def transform(self, columns: np.ndarray) -> Tensor:
        """Shared-table ids ``[N, C]``: ``offset[j] + 1 + rank of value`` (``offset[j]``: unseen)."""
        if self.offsets is None:
            raise ValueError("CategoricalEncoder is not fitted; call fit(columns) first")
        columns = _as_2d(columns)
        if columns.shape[1] != len(self.vocabularies):
            raise ValueError(f"categorical columns: got {columns.shape[1]} columns, the encoder "
                             f"was fitted on {len(self.vocabularies)}")
        ids = np.empty(columns.shape, dtype=np.int64)
        for j, vocab in enumerate(self.vocabularies):
            pos = np.searchsorted(vocab, columns[:, j]).clip(max=max(vocab.size - 1, 0))
            seen = vocab[pos] == columns[:, j] if vocab.size else np.zeros(len(columns), bool)
            ids[:, j] = self.offsets[j] + np.where(seen, pos + 1, 0)
        return torch.from_numpy(ids)

    def fit_transform(self, columns: np.ndarray) -> Tensor:
        return self.fit(columns).transform(columns)

    def one_hot_width(self) -> int:
        """Columns a one-hot encoding would need (for comparing memory)."""
        return self.num_embeddings


def _as_2d(columns) -> np.ndarray:
    columns = np.asarray(columns)
    if columns.ndim == 1:
        columns = columns[:, None]
    if columns.ndim != 2:
        raise ValueError(f"categorical columns must be [num_nodes, num_columns], got shape "
                         f"{list(columns.shape)}")
    return columns


class CategoricalEmbedding(nn.Module):
    """``[N, C]`` shared-table ids -> ``[N, dim]``: the sum (or mean) of one vector per column."""

    def __init__(self, num_embeddings: int, dim: int, mode: str = "sum") -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(num_embeddings, dim, mode=mode)

    @classmethod
    def from_encoder(cls, encoder: CategoricalEncoder, dim: int, mode: str = "sum"):
        return cls(encoder.num_embeddings, dim, mode)

    def forward(self, ids: Tensor, per_sample_weights: Optional[Tensor] = None) -> Tensor:
        # A 2-D input is one bag per row with C entries: no offsets tensor needed.
        return self.bag(ids, per_sample_weights=per_sample_weights)


class NodeFeatureEncoder(nn.Module):
    """Dense numeric features concatenated with embedded categorical columns: the input of a
    model trained with ``--categorical`` (``num_embeddings``: the shared table's rows)."""

    def __init__(self, num_embeddings: int, dim: int, mode: str = "sum") -> None:
        super().__init__()
        self.embed = CategoricalEmbedding(num_embeddings, dim, mode)

    @classmethod
    def from_encoder(cls, encoder: CategoricalEncoder, dim: int, mode: str = "sum"):
        return cls(encoder.num_embeddings, dim, mode)

    def forward(self, x: Optional[Tensor], categorical_ids: Tensor) -> Tensor:
        emb = self.embed(categorical_ids)
        return emb if x is None else torch.cat([x, emb.to(x.dtype)], dim=-1)


def one_hot_columns(ids: Tensor, num_embeddings: int) -> Tensor:
    """Dense one-hot ``[N, num_embeddings]`` of shared-table ids (reference / small data only)."""
    out = torch.zeros(ids.size(0), num_embeddings)
    out.scatter_(1, ids, 1.0)
    return out


__all__: Sequence[str] = ("CategoricalEncoder", "CategoricalEmbedding", "NodeFeatureEncoder",
                          "one_hot_columns")
