"""GraphSAINT samplers: PyG's, with an edge sampler that scales past toy graphs.

PyG's ``GraphSAINTEdgeSampler._sample_nodes`` draws ``budget`` edges with an
exponential race over a dense ``[budget, num_edges]`` random matrix (8 GB at a
budget of 2,000 and 1M edges).  The winner of each race is one independent draw
with probability ``p_e / sum(p)``, so inverse-CDF sampling on ``cumsum(p)`` gives
the same kind of draw in ``O(num_edges)`` memory; ``torch.multinomial`` cannot
be used instead because it refuses more than 2**24 categories.  PyG also inverts
the degrees twice (``1 / (1 / colcount)``), weighting edges by ``deg(u) + deg(v)``;
the GraphSAINT paper (Zeng et al. 2020, sec. 3.3) uses ``1/deg(u) + 1/deg(v)``,
which is what is drawn here.  The normalisation is estimated empirically either way.
"""
from __future__ import annotations

import torch
from torch_geometric.loader import (GraphSAINTEdgeSampler, GraphSAINTNodeSampler,
                                    GraphSAINTRandomWalkSampler)


class ScalableGraphSAINTEdgeSampler(GraphSAINTEdgeSampler):
    """GraphSAINT edge sampler, ``P(e=(u,v)) ∝ 1/deg(u) + 1/deg(v)``, drawn by inverse CDF."""

    _edge_cdf: torch.Tensor | None = None

    def _cdf(self) -> torch.Tensor:
        if self._edge_cdf is None:
            row, col, _ = self.adj.coo()
            deg_in = self.adj.storage.colcount().to(torch.float64)
            deg_out = self.adj.storage.rowcount().to(torch.float64)
            # The paper's weights (degrees are >= 1 on an edge's endpoints).
            prob = 1.0 / deg_out[row] + 1.0 / deg_in[col]
            self._edge_cdf = torch.cumsum(prob, 0)
        return self._edge_cdf

    def _sample_nodes(self, batch_size: int) -> torch.Tensor:
        cdf = self._cdf()
        u = torch.rand(batch_size, dtype=torch.float64) * cdf[-1]
        edge_sample = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.numel() - 1)
        row, col, _ = self.adj.coo()
        return torch.cat([col[edge_sample], row[edge_sample]], -1)


SAINT_SAMPLERS = {"saint-rw": GraphSAINTRandomWalkSampler, "saint-node": GraphSAINTNodeSampler,
                  "saint-edge": ScalableGraphSAINTEdgeSampler}
