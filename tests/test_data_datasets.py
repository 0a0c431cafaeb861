"""Datasets (synthetic, Planetoid, OGB error, user .pt/.npz files) and validation on load."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import read_metrics, run_train
from gnnzero.data import load_dataset
from gnnzero.data.synthetic import SyntheticSpec, make_synthetic_graph
from gnnzero.errors import GnnZeroError


def test_synthetic_is_default_deterministic_and_sized_by_flags():
    a = load_dataset("synthetic", num_nodes=2000, avg_degree=20, words_per_node=5)
    b = load_dataset("synthetic", num_nodes=2000, avg_degree=20, words_per_node=5)
    assert torch.equal(a.edge_index, b.edge_index) and a.fingerprint() == b.fingerprint()
    row, col = a.edge_index
    assert bool((row != col).all())                                   # no self-loops
    assert a.edge_index.size(1) == torch.unique(row * 2000 + col).numel()  # no duplicates
    reverse = set((col * 2000 + row).tolist())
    assert reverse == set((row * 2000 + col).tolist())                # undirected
    assert 18 < a.num_edges / 2000 <= 20                              # mean degree ~ 20
    x = a.features.rows(torch.arange(2000))
    assert 4.5 < float((x != 0).sum()) / 2000 <= 5.0                  # ~5 words a node
    assert type(a.features).__name__ == "SparseFeatureStore"


PLANETOID = {  # published Planetoid statistics (Yang et al. 2016 / Kipf & Welling 2017)
    "cora": (2708, 10556, 1433, 7, 140),
    "citeseer": (3327, 9104, 3703, 6, 120),
}


@pytest.mark.parametrize("name", sorted(PLANETOID))
def test_planetoid_from_local_copy(name, planetoid_root):
    ds = load_dataset(name, data_root=str(planetoid_root))
    nodes, edges, feats, classes, train = PLANETOID[name]
    assert (ds.num_nodes, ds.num_edges, ds.num_features, ds.num_classes) == \
        (nodes, edges, feats, classes)
    assert [int(ds.masks[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == \
        [train, 500, 1000]
    x = ds.features.rows(torch.arange(50))
    nonzero = x.sum(dim=1) > 0
    assert torch.allclose(x.sum(dim=1)[nonzero], torch.ones(int(nonzero.sum())))  # row-normalised


def test_ogb_without_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ogb", None)
    monkeypatch.setitem(sys.modules, "ogb.nodeproppred", None)
    with pytest.raises(GnnZeroError, match=r"needs the ogb package: pip install -e '\.\[ogb\]'"):
        load_dataset("ogbn-arxiv", data_root=str(tmp_path))


def _small_graph(n: int = 500):
    edge_index, x, y, masks = make_synthetic_graph(SyntheticSpec(num_nodes=n, num_classes=4))
    return edge_index.numpy(), x, y.numpy(), {k: v.numpy() for k, v in masks.items()}


def _write(path, edge_index, x, y, masks, sparse_x: bool):
    if str(path).endswith(".npz"):
        arrays = {"edge_index": edge_index, "y": y, **masks}
        if sparse_x:
            arrays.update(x_data=x.data, x_indices=x.indices, x_indptr=x.indptr,
                          x_shape=np.array(x.shape))
        else:
            arrays["x"] = x.toarray() if sp.issparse(x) else x
        np.savez(path, **arrays)
    else:
        dense = torch.from_numpy(x.toarray() if sp.issparse(x) else x)
        torch.save({"edge_index": torch.from_numpy(edge_index), "y": torch.from_numpy(y),
                    "x": dense.to_sparse() if sparse_x else dense,
                    **{k: torch.from_numpy(v) for k, v in masks.items()}}, path)


@pytest.mark.parametrize("suffix,sparse_x", [(".pt", False), (".pt", True), (".npz", False),
                                             (".npz", True)])
def test_user_file_formats(tmp_path, suffix, sparse_x):
    edge_index, x, y, masks = _small_graph()
    path = tmp_path / f"graph{suffix}"
    _write(path, edge_index, x, y, masks, sparse_x)
    ds = load_dataset(str(path))
    assert ds.num_nodes == 500 and torch.equal(ds.edge_index, torch.from_numpy(edge_index))
    assert torch.equal(ds.features.rows(torch.arange(500)), torch.from_numpy(x.toarray()))
    assert torch.equal(ds.y, torch.from_numpy(y)) and ds.num_classes == 4
    assert all(torch.equal(ds.masks[k], torch.from_numpy(v)) for k, v in masks.items())


def test_train_py_runs_on_user_file(tmp_path):
    edge_index, x, y, masks = _small_graph()
    path = tmp_path / "mine.npz"
    _write(path, edge_index, x, y, masks, sparse_x=True)
    out = tmp_path / "run"
    proc = run_train(["--ds_config", "ds_configs/zero2.json", "--dataset", str(path),
                      "--epochs", "1", "--num-parts", "4", "--clusters-per-batch", "2",
                      "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                      "--no-checkpoint", "--hidden", "16"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(out)
    assert metrics["dataset"]["num_nodes"] == 500
    assert metrics["dataset"]["num_edges"] == edge_index.shape[1]
    assert metrics["dataset"]["feature_store"] == "SparseFeatureStore"
    assert metrics["loader"]["steps_per_epoch"] == 2


# --- validation on load: each problem is a ValueError naming the field and the count ---------

def _corrupt(field: str):
    edge_index, x, y, masks = _small_graph()
    x = x.toarray()
    if field == "negative edge":
        edge_index = edge_index.copy()
        edge_index[0, [3, 8, 9]] = -1
    elif field == "edge too big":
        edge_index = edge_index.copy()
        edge_index[1, :5] = 500
    elif field == "nan x":
        x[[1, 2], [0, 3]] = np.nan
        x[7, 7] = np.inf
    elif field == "x rows":
        x = x[:-2]
    elif field == "y length":
        y = y[:-3]
    elif field == "label range":
        y = y.copy()
        y[:6] = 9
    elif field == "empty mask":
        masks["val_mask"] = np.zeros_like(masks["val_mask"])
    elif field == "mask length":
        masks["test_mask"] = masks["test_mask"][:400]
    return edge_index, sp.csr_matrix(x) if field == "nan x" else x, y, masks


@pytest.mark.parametrize("field,message", [
    ("negative edge", r"edge_index has 3 negative entries"),
    ("edge too big", r"edge_index has 5 entries >= num_nodes=500"),
    ("nan x", r"x has 3 NaN/inf entries"),
    ("x rows", r"y has 500 entries but the graph has 498 nodes \(= rows of x\)"),
    ("y length", r"y has 497 entries but the graph has 500 nodes"),
    ("label range", r"y has 6 labels outside \[0, 4\)"),
    ("empty mask", r"val_mask is empty \(0 of 500 nodes selected\)"),
    ("mask length", r"test_mask has 400 entries but the graph has 500 nodes"),
])
def test_validation_names_field_and_count(tmp_path, field, message):
    edge_index, x, y, masks = _corrupt(field)
    path = tmp_path / "bad.npz"
    arrays = {"edge_index": edge_index, "y": y, "num_classes": np.array(4), **masks}
    if sp.issparse(x):
        arrays.update(x_data=x.data, x_indices=x.indices, x_indptr=x.indptr,
                      x_shape=np.array(x.shape))
    else:
        arrays["x"] = x
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(path))


def test_float_edge_index_is_refused(tmp_path):
    edge_index, x, y, masks = _small_graph()
    np.savez(tmp_path / "f.npz", edge_index=edge_index.astype(np.float32), x=x.toarray(), y=y,
             **masks)
    with pytest.raises(ValueError, match="edge_index must hold integer node ids"):
        load_dataset(str(tmp_path / "f.npz"))
