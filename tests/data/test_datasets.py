"""Datasets (Planetoid, OGB error, user .pt/.npz files) on load.

The synthetic generator is tested in test_synthetic.py, the checks on load in test_validate.py."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnzero.data import load_dataset
from gnnzero.errors import GnnZeroError
from tests.data.graphs import small_graph
from tests.helpers import read_metrics, run_train


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


def _edge_keys(edge_index) -> list[tuple[int, int]]:
    """The edges as sorted pairs (the stored order groups edges by target)."""
    return sorted(map(tuple, np.asarray(edge_index).T.tolist()))


@pytest.mark.parametrize("suffix,sparse_x", [(".pt", False), (".pt", True), (".npz", False),
                                             (".npz", True)])
def test_user_file_formats(tmp_path, suffix, sparse_x):
    edge_index, x, y, masks = small_graph()
    path = tmp_path / f"graph{suffix}"
    _write(path, edge_index, x, y, masks, sparse_x)
    ds = load_dataset(str(path))
    assert ds.num_nodes == 500 and _edge_keys(ds.edge_index.numpy()) == _edge_keys(edge_index)
    assert torch.equal(ds.features.rows(torch.arange(500)), torch.from_numpy(x.toarray()))
    assert torch.equal(ds.y, torch.from_numpy(y)) and ds.num_classes == 4
    assert all(torch.equal(ds.masks[k], torch.from_numpy(v)) for k, v in masks.items())


@pytest.mark.e2e
def test_train_py_runs_on_user_file(tmp_path):
    edge_index, x, y, masks = small_graph()
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


def test_float_edge_index_is_refused(tmp_path):
    edge_index, x, y, masks = small_graph()
    np.savez(tmp_path / "f.npz", edge_index=edge_index.astype(np.float32), x=x.toarray(), y=y,
             **masks)
    with pytest.raises(ValueError, match="edge_index must hold integer node ids"):
        load_dataset(str(tmp_path / "f.npz"))


def test_pubmed_loads_through_planetoid_when_its_raw_files_are_present(planetoid_root, tmp_path):
    """No PubMed files here: Cora's raw files under PubMed's names go through the same path
    (PyG's ``Planetoid(root, "PubMed")``), so ``--dataset pubmed`` gives Cora's graph."""
    raw = tmp_path / "PubMed" / "raw"
    raw.mkdir(parents=True)
    for path in (planetoid_root / "Cora" / "raw").iterdir():
        (raw / path.name.replace("ind.cora.", "ind.pubmed.")).write_bytes(path.read_bytes())
    pubmed, cora = load_dataset("pubmed", data_root=str(tmp_path)), \
        load_dataset("cora", data_root=str(planetoid_root))
    assert (pubmed.num_nodes, pubmed.num_edges, pubmed.num_features) == (2708, 10556, 1433)
    assert torch.equal(pubmed.y, cora.y) and torch.equal(pubmed.edge_index, cora.edge_index)
    assert all(torch.equal(pubmed.masks[k], cora.masks[k]) for k in cora.masks)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GnnZeroError, match="PubMed"):
        load_dataset("pubmed", data_root=str(tmp_path / "empty"))
