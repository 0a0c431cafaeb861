"""Validation on load: each problem is a ValueError naming the field and the count."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gnnzero.data import LoaderOptions, build_loader, load_dataset
from tests.data.graphs import small_graph


def _corrupt(field: str):
    edge_index, x, y, masks = small_graph()
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


def test_num_parts_larger_than_nodes_is_refused(graph):
    with pytest.raises(ValueError, match=r"num_parts=1300 is larger than the node count 1200 "
                                         r"\(by 100\)"):
        build_loader(graph, LoaderOptions(kind="cluster", num_parts=1300))
