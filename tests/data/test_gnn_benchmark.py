"""Amazon / Coauthor graphs from local raw files, and Shchur et al.'s per-class split."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from gnnzero.data import load_dataset
from gnnzero.data.datasets import check_dataset_source, per_class_split
from gnnzero.errors import GnnZeroError
from tests.helpers import SHARED_DATA

GNN_BENCH = Path(os.environ.get("GNNZERO_GNN_BENCHMARK_ROOT", SHARED_DATA.parent / "gnn_benchmark"))


def test_per_class_split_counts_disjoint_and_seeded():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (2000,), generator=gen)
    y[:10] = 4                                      # class 4 is large; class 5 has 30 nodes
    y[-30:] = 5
    masks = per_class_split(y, 6, seed=3)
    for c in range(6):
        members = y == c
        assert int((masks["train_mask"] & members).sum()) == 20
        assert int((masks["val_mask"] & members).sum()) == min(30, int(members.sum()) - 20)
    total = masks["train_mask"].int() + masks["val_mask"].int() + masks["test_mask"].int()
    assert torch.equal(total, torch.ones(2000, dtype=torch.int32))   # disjoint, covering
    again = per_class_split(y, 6, seed=3)
    other = per_class_split(y, 6, seed=4)
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    assert not torch.equal(masks["train_mask"], other["train_mask"])


def _raw(file: str):
    path = GNN_BENCH / file
    if not path.exists():
        pytest.skip(f"{path} not found; set GNNZERO_GNN_BENCHMARK_ROOT")
    with np.load(path, allow_pickle=True) as f:
        adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), f["adj_shape"])
        attr = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]),
                             f["attr_shape"])
        return adj, attr, f["labels"]


@pytest.mark.parametrize("name,file", [("coauthor-cs", "ms_academic_cs.npz"),
                                       ("amazon-computers", "amazon_electronics_computers.npz")])
def test_gnn_benchmark_graph_is_the_largest_component_of_the_raw_file(name, file):
    adj, attr, labels = _raw(file)
    sym = ((adj + adj.T) > 0).astype(np.int8)
    _, component = connected_components(sym, directed=False)
    largest = np.flatnonzero(component == np.bincount(component).argmax())
    dataset = load_dataset(name, str(GNN_BENCH), seed=0)
    assert dataset.num_nodes == largest.size
    sub = sym[largest][:, largest].tolil()
    sub.setdiag(0)
    assert dataset.num_edges == sub.tocsr().nnz             # both directions, no self-loops
    assert torch.equal(dataset.y, torch.from_numpy(labels[largest]).long())
    rows = torch.arange(0, dataset.num_nodes, 97)
    expected = (attr[largest[rows.numpy()]].toarray() > 0).astype(np.float32)  # binary
    assert np.array_equal(dataset.features.rows(rows).numpy(), expected)
    train = dataset.masks["train_mask"]
    assert int(train.sum()) == 20 * dataset.num_classes


def test_missing_root_or_file_is_one_line(tmp_path):
    with pytest.raises(GnnZeroError, match="needs --data-root"):
        check_dataset_source("coauthor-cs", None)
    with pytest.raises(GnnZeroError, match="has no ms_academic_cs.npz"):
        check_dataset_source("coauthor-cs", str(tmp_path))


@pytest.mark.parametrize("name,file,stands_in", [
    ("coauthor-physics", "ms_academic_phy.npz", "coauthor-cs"),
    ("amazon-photo", "amazon_electronics_photo.npz", "amazon-computers")])
def test_photo_and_physics_load_through_pyg_under_their_own_file_names(name, file, stands_in,
                                                                        tmp_path):
    """No Photo / Physics files here: CS's and Computers' raw files under their names go
    through PyG's ``Coauthor(root, "Physics")`` / ``Amazon(root, "Photo")``."""
    source = GNN_BENCH / {"coauthor-cs": "ms_academic_cs.npz",
                          "amazon-computers": "amazon_electronics_computers.npz"}[stands_in]
    if not source.exists():
        pytest.skip(f"{source} not found; set GNNZERO_GNN_BENCHMARK_ROOT")
    (tmp_path / file).write_bytes(source.read_bytes())
    ours, reference = load_dataset(name, str(tmp_path), seed=1), \
        load_dataset(stands_in, str(GNN_BENCH), seed=1)
    assert (ours.num_nodes, ours.num_edges, ours.num_classes) == \
        (reference.num_nodes, reference.num_edges, reference.num_classes)
    assert torch.equal(ours.y, reference.y)
    assert all(torch.equal(ours.masks[k], reference.masks[k]) for k in reference.masks)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GnnZeroError, match=f"has no {file}"):
        check_dataset_source(name, str(tmp_path / "empty"))
