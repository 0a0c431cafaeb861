"""The OGB loader on a small directory in OGB's on-disk layout (``ogbn_arxiv/raw``, ``split/time``,
``RELEASE_v1.txt``), written by the test: nothing is downloaded."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from gnnzero.data.datasets import load_dataset

N, E, F = 60, 240, 8


def _csv_gz(path, rows) -> None:
    with gzip.open(path, "wt") as handle:
        for row in np.atleast_2d(rows) if np.ndim(rows) > 1 else rows:
            handle.write((",".join(map(str, row)) if np.ndim(row) else str(row)) + "\n")


@pytest.fixture
def ogb_root(tmp_path):
    """A 60-node stand-in for ogbn-arxiv, laid out as the ogb package stores it."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "ogbn_arxiv"
    (folder / "raw").mkdir(parents=True)
    (folder / "split" / "time").mkdir(parents=True)
    (folder / "RELEASE_v1.txt").write_text("")
    edges = rng.integers(0, N, size=(E, 2))
    _csv_gz(folder / "raw" / "edge.csv.gz", edges)
    _csv_gz(folder / "raw" / "num-node-list.csv.gz", [N])
    _csv_gz(folder / "raw" / "num-edge-list.csv.gz", [E])
    feats = rng.normal(size=(N, F)).round(4)
    _csv_gz(folder / "raw" / "node-feat.csv.gz", feats)
    labels = rng.integers(0, 40, size=N)
    _csv_gz(folder / "raw" / "node-label.csv.gz", labels)
    _csv_gz(folder / "raw" / "node_year.csv.gz", rng.integers(2000, 2020, size=N))
    order = rng.permutation(N)
    for name, part in zip(("train", "valid", "test"), np.split(order, [30, 45])):
        _csv_gz(folder / "split" / "time" / f"{name}.csv.gz", np.sort(part))
    return tmp_path, edges, feats, labels, np.split(order, [30, 45])


def test_ogb_loader_reads_ogbs_layout(ogb_root):
    pytest.importorskip("ogb")
    root, edges, feats, labels, (train, valid, test) = ogb_root
    ds = load_dataset("ogbn-arxiv", data_root=str(root), feature_format="dense")
    assert ds.name == "ogbn-arxiv" and ds.num_nodes == N and ds.num_classes == 40
    got = {tuple(e) for e in ds.edge_index.t().tolist()}
    assert got == {tuple(e) for e in edges.tolist()}          # arxiv: directed, as stored
    torch.testing.assert_close(ds.features.rows(torch.arange(N)),
                               torch.tensor(feats, dtype=torch.float32))
    assert ds.y.tolist() == labels.tolist()
    for mask, part in (("train_mask", train), ("val_mask", valid), ("test_mask", test)):
        assert sorted(ds.masks[mask].nonzero().view(-1).tolist()) == sorted(part.tolist())


def test_a_missing_ogb_folder_is_one_line(tmp_path):
    pytest.importorskip("ogb")
    from gnnzero.errors import GnnZeroError

    with pytest.raises(GnnZeroError, match=r"has no .*ogbn_products; download ogbn-products"):
        load_dataset("ogbn-products", data_root=str(tmp_path))
