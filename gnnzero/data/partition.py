"""METIS partitioning for Cluster-GCN through ``pymetis``, cached on disk.

PyG's ``ClusterData`` asks for pyg-lib or a METIS-enabled torch-sparse; neither
installs here (Debian's libmetis is 32-bit), so ``_metis`` is overridden to call
the ``pymetis`` wheel.  The node -> part vector is cached under
``cache_dir/<graph fingerprint>/metis_<num_parts>.pt`` (written atomically), so a
second run with the same graph and ``num_parts`` skips METIS.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch_geometric.loader import ClusterData
from torch_geometric.utils import remove_self_loops, to_undirected

from ..utils.atomic import atomic_torch_save


def metis_parts(edge_index: Tensor, num_nodes: int, num_parts: int) -> Tensor:
    """Node -> part assignment from METIS (k-way) on the symmetrised graph."""
    import pymetis

    if num_parts > num_nodes:
        raise ValueError(f"num_parts={num_parts} is larger than the node count {num_nodes}; "
                         f"use at most {num_nodes} parts")
    if num_parts == 1:
        return torch.zeros(num_nodes, dtype=torch.long)
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)  # METIS needs symmetry
    row, col = edge_index.numpy()
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=num_nodes), out=indptr[1:])
    result = pymetis.part_graph(num_parts, xadj=indptr, adjncy=col)
    membership = result[1] if isinstance(result, tuple) else result.vertex_part
    return torch.as_tensor(np.asarray(membership), dtype=torch.long)


class PyMetisClusterData(ClusterData):
    """``ClusterData`` whose METIS call goes through pymetis and a disk cache."""

    def __init__(self, data, num_parts: int, cache_dir: Optional[str] = None,
                 fingerprint: Optional[str] = None, **kwargs) -> None:
        self._cache_path = None
        if cache_dir and fingerprint:
            self._cache_path = os.path.join(cache_dir, fingerprint, f"metis_{num_parts}.pt")
        self.metis_from_cache = False
        super().__init__(data, num_parts, log=False, **kwargs)

    def _metis(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        path = self._cache_path
        if path and os.path.exists(path):
            cluster = torch.load(path)
            if cluster.numel() == num_nodes:
                self.metis_from_cache = True
                return cluster
        print(f"Computing METIS partitioning ({self.num_parts} parts, {num_nodes} nodes)...",
              file=sys.stderr, flush=True)
        cluster = metis_parts(edge_index, num_nodes, self.num_parts)
        if path:
            atomic_torch_save(cluster, path)
        return cluster
