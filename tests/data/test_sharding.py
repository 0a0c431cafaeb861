"""Rank sharding: every item once per epoch, disjoint across ranks, equal steps, reshuffled."""
from __future__ import annotations

import numpy as np
import pytest

from gnnzero.data.sharding import shard_batches


WORLD_SIZES = (1, 2, 4, 8)


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_shards_cover_every_item_once_with_equal_steps(world):
    for num_items, per_batch in ((37, 2), (100, 7), (8, 1)):
        epochs = []
        for epoch in range(2):
            shards = [shard_batches(num_items, world, r, per_batch, epoch, seed=5)
                      for r in range(world)]
            assert len({len(s) for s in shards}) == 1                # equal steps per rank
            assert all(len(g) > 0 for s in shards for g in s)         # no empty batch
            flat = [np.concatenate(s) for s in shards]
            for a in range(world):
                for b in range(a + 1, world):
                    assert not set(flat[a]) & set(flat[b])            # disjoint shards
            assert sorted(np.concatenate(flat).tolist()) == list(range(num_items))
            epochs.append(np.concatenate([g for s in shards for g in s]))
        if num_items > 8:
            assert not np.array_equal(epochs[0], epochs[1])           # reshuffled per epoch
