"""Heterogeneous graphs: ``build_hetero_model`` (PyG ``to_hetero``) trained on NeighborLoader batches."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torch_sparse")  # NeighborLoader on HeteroData needs pyg-lib or torch_sparse
from torch_geometric.data import HeteroData  # noqa: E402
from torch_geometric.loader import NeighborLoader  # noqa: E402

from gnnzero.models import build_hetero_model, count_parameters  # noqa: E402
from gnnzero.models.lowrank import LowRankLinear  # noqa: E402


def make_graph(seed: int = 0) -> HeteroData:
    """Papers (labelled by a hidden class), authors who write them, citations within a class."""
    gen = torch.Generator().manual_seed(seed)
    num_papers, num_authors, classes = 240, 80, 3
    label = torch.randint(0, classes, (num_papers,), generator=gen)
    data = HeteroData()
    centres = torch.randn(classes, 16, generator=gen)
    data["paper"].x = centres[label] + 1.5 * torch.randn(num_papers, 16, generator=gen)
    data["paper"].y = label
    data["author"].x = torch.randn(num_authors, 6, generator=gen)
    writes = torch.stack([torch.randint(0, num_authors, (600,), generator=gen),
                          torch.randint(0, num_papers, (600,), generator=gen)])
    src = torch.randint(0, num_papers, (2000,), generator=gen)
    dst = torch.randint(0, num_papers, (2000,), generator=gen)
    same = label[src] == label[dst]
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "rev_writes", "author"].edge_index = writes.flip(0)
    data["paper", "cites", "paper"].edge_index = torch.stack([src[same], dst[same]])
    return data


def train_losses(model, data: HeteroData, epochs: int) -> list[float]:
    loader = NeighborLoader(data, num_neighbors=[8, 8], batch_size=60, shuffle=True,
                            input_nodes=("paper", torch.arange(data["paper"].num_nodes)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for batch in loader:
            optimizer.zero_grad()
            size = batch["paper"].batch_size
            out = model(batch.x_dict, batch.edge_index_dict)["paper"][:size]
            loss = F.cross_entropy(out, batch["paper"].y[:size])
            loss.backward()
            optimizer.step()
            total, count = total + float(loss) * size, count + size
        losses.append(total / count)
    return losses


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("arch,kwargs", [("sage", {}), ("gat", {"heads": 2}),
                                         ("sage", {"rank": 4, "share_weights": True})])
def test_hetero_model_trains_on_neighbor_batches(arch, kwargs):
    torch.manual_seed(0)
    data = make_graph()
    layers = 4 if kwargs.get("share_weights") else 2
    model = build_hetero_model(arch, data, 16, 3, layers, dropout=0.0, **kwargs)
    losses = train_losses(model, data, epochs=4)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hetero_low_rank_and_sharing_are_per_edge_type():
    torch.manual_seed(0)
    data = make_graph()
    model = build_hetero_model("sage", data, 16, 3, 4, rank=4, share_weights=True)
    edge_types = ["author__writes__paper", "paper__rev_writes__author", "paper__cites__paper"]
    assert sorted(model.shared_cores) == sorted(edge_types)
    for key in edge_types:
        assert model.convs[1][key].lin_l.core is model.convs[2][key].lin_l.core
        assert isinstance(model.convs[0][key].lin_l, LowRankLinear)
    # SAGE per edge type: lin_l (source width -> 16, bias) + lin_r (target width -> 16);
    # widths 16 (paper) and 6 (author) both exceed rank 4, so every first-layer map is factorised.
    width = {"paper": 16, "author": 6}

    def sage(i_src, i_dst, o, shared_weights=True):
        lin = lambda i: 4 * (i + o) if 4 < min(i, o) else i * o  # noqa: E731
        return (lin(i_src) + lin(i_dst) if shared_weights else 0) + o

    expected = 0
    for key in edge_types:
        src, _, dst = key.split("__")
        expected += sage(width[src], width[dst], 16)            # layer 0
        expected += sage(16, 16, 16) + sage(16, 16, 16, False)  # layers 1-2: one core, 2 biases
        expected += 16 * 3 * 2 + 3                              # layer 3: 16->3 stays dense
    assert count_parameters(model) == expected


def test_hetero_rejects_homogeneous_only_arch():
    with pytest.raises(ValueError, match="arch 'gcn' has no heterogeneous path"):
        build_hetero_model("gcn", make_graph(), 16, 3, 2)
