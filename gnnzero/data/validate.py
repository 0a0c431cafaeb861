"""Validation of a loaded graph: each problem is a ValueError naming the field and the count."""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import scipy.sparse as sp
import torch


def _count_nonfinite(x) -> int:
    if sp.issparse(x):
        return int((~np.isfinite(x.data)).sum())
    if isinstance(x, np.ndarray):
        bad = 0
        for start in range(0, x.shape[0], 65_536):  # chunked: x may be a memmap
            bad += int((~np.isfinite(x[start:start + 65_536])).sum())
        return bad
    x = torch.as_tensor(x)
    if not torch.is_floating_point(x):
        return 0
    return int((~torch.isfinite(x)).sum())


def validate_graph(edge_index: torch.Tensor, num_nodes: int, y: torch.Tensor,
                   masks: Mapping[str, torch.Tensor], x=None,
                   num_classes: Optional[int] = None) -> None:
    """Raise ``ValueError`` for the first problem found in the graph's fields.

    Lengths are checked first (node count = ``x`` rows), so a truncated field is
    reported as such rather than as out-of-range edges.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, num_edges], got {list(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
    if x is not None and x.shape[0] != num_nodes:
        raise ValueError(f"x has {x.shape[0]} rows but the graph has {num_nodes} nodes")
    if y.size(0) != num_nodes:
        raise ValueError(f"y has {y.size(0)} entries but the graph has {num_nodes} nodes "
                         f"(= rows of x)")
    for name, mask in masks.items():
        if mask.size(0) != num_nodes:
            raise ValueError(f"{name} has {mask.size(0)} entries but the graph has "
                             f"{num_nodes} nodes (= rows of x)")
    if edge_index.numel():  # min/max first: no [2, E] boolean temporaries on a good graph
        if int(edge_index.min()) < 0:
            negative = int((edge_index < 0).sum())
            raise ValueError(f"edge_index has {negative} negative entries; node ids must be in "
                             f"[0, {num_nodes})")
        if int(edge_index.max()) >= num_nodes:
            too_big = int((edge_index >= num_nodes).sum())
            raise ValueError(f"edge_index has {too_big} entries >= num_nodes={num_nodes}; "
                             f"node ids must be in [0, {num_nodes})")
    if x is not None:
        bad = _count_nonfinite(x)
        if bad:
            raise ValueError(f"x has {bad} NaN/inf entries; clean or impute the features first")
    if num_classes is not None:
        out = int(((y < 0) | (y >= num_classes)).sum())
        if out:
            raise ValueError(f"y has {out} labels outside [0, {num_classes})")
    for name, mask in masks.items():
        if mask.dtype != torch.bool:
            raise ValueError(f"{name} must be a boolean mask, got {mask.dtype}")
        if not bool(mask.any()):
            raise ValueError(f"{name} is empty (0 of {num_nodes} nodes selected)")


def validate_num_parts(num_parts: int, num_nodes: int) -> None:
    """Raise ``ValueError`` when METIS is asked for more parts than there are nodes."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if num_parts > num_nodes:
        raise ValueError(f"num_parts={num_parts} is larger than the node count {num_nodes} "
                         f"(by {num_parts - num_nodes}); use --num-parts <= {num_nodes}")
