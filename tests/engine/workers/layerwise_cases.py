"""Models the layer-wise worker and its test build alike (same seed, same shapes)."""
from __future__ import annotations

import torch

from gnnzero.models import build_model

LAYERWISE_CASES = {"sage": {"arch": "sage"}, "gcn": {"arch": "gcn"},
                   "gat-jk": {"arch": "gat", "heads": 2, "jk": "max"}}


def seeded_model(name: str, dataset) -> torch.nn.Module:
    kwargs = dict(LAYERWISE_CASES[name])
    arch = kwargs.pop("arch")
    torch.manual_seed(7)
    return build_model(arch, dataset.num_features, 16, dataset.num_classes, 3, **kwargs).eval()
