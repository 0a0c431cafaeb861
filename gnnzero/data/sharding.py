"""Rank sharding of per-epoch work items (clusters, seed nodes, sampler steps).

Every item is visited exactly once per epoch across all ranks, each rank gets a
disjoint shard, and all ranks get the same number of steps so no collective
(gradient all-reduce, ZeRO gathers) waits on a rank that ran out of batches.
"""
from __future__ import annotations

import math

import numpy as np


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator every rank shares for ``epoch`` (same permutation on all ranks)."""
    return np.random.default_rng([seed, epoch])


def steps_per_epoch(num_items: int, world_size: int, items_per_batch: int) -> int:
    """Steps each rank takes so that ``num_items`` are covered in batches of about ``items_per_batch``."""
    return max(1, math.ceil(num_items / (world_size * items_per_batch)))


def shard_batches(num_items: int, world_size: int, rank: int, items_per_batch: int,
                  epoch: int, seed: int, shuffle: bool = True) -> list[np.ndarray]:
    """This rank's batches of item ids for ``epoch``.

    The (shuffled) items are split into ``world_size * steps`` near-equal groups
    (sizes differ by at most one) and dealt round-robin to the ranks.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if num_items < world_size:
        raise ValueError(f"only {num_items} items to shard over {world_size} ranks; "
                         f"use more parts / seed nodes or fewer ranks")
    steps = steps_per_epoch(num_items, world_size, items_per_batch)
    steps = min(steps, num_items // world_size)  # every group non-empty
    order = epoch_rng(seed, epoch).permutation(num_items) if shuffle else np.arange(num_items)
    groups = np.array_split(order, world_size * steps)
    return groups[rank::world_size]
