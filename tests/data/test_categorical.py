"""Categorical columns: one shared embedding table equals one-hot times a weight."""
from __future__ import annotations

import numpy as np
import torch

from gnnzero.data.categorical import (CategoricalEmbedding, CategoricalEncoder,
                                      one_hot_columns)


def test_categorical_embedding_equals_one_hot_times_weight():
    rng = np.random.default_rng(0)
    columns = np.stack([rng.choice(["de", "fr", "us"], 200),
                        rng.integers(0, 1000, 200).astype(str),
                        rng.choice(["a", "b"], 200)], axis=1)
    encoder = CategoricalEncoder().fit(columns[:150])
    ids = encoder.transform(columns)
    widths = [np.unique(columns[:150, j]).size + 1 for j in range(3)]
    assert encoder.num_embeddings == sum(widths)
    # Each column's ids fall in its own block of the shared table.
    starts = np.cumsum([0] + widths)
    for j in range(3):
        assert bool(((ids[:, j] >= starts[j]) & (ids[:, j] < starts[j + 1])).all())
    # Values unseen in the fitted rows map to their column's id 0.
    unseen = ~np.isin(columns[:, 1], columns[:150, 1])
    assert unseen.any() and bool((ids[torch.from_numpy(unseen), 1] == starts[1]).all())
    torch.manual_seed(0)
    module = CategoricalEmbedding.from_encoder(encoder, dim=8)
    one_hot = one_hot_columns(ids, encoder.num_embeddings)
    assert torch.allclose(module(ids), one_hot @ module.bag.weight, atol=1e-6)
    assert ids.numel() * 8 < one_hot.numel() * 4 / 10       # ids are far smaller than one-hot
