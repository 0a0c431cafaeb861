"""PCA of node features: chunked and sampled fits against numpy's SVD, every store format."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnzero.data.pca import ChunkedPCA


def _low_rank_data(n: int, f: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(10, 5, k)
    return ((rng.normal(size=(n, k)) * scales) @ np.linalg.qr(rng.normal(size=(f, k)))[0].T
            + 0.01 * rng.normal(size=(n, f)) + rng.normal(size=f)).astype(np.float32)


def test_pca_matches_numpy_svd_projection():
    x = _low_rank_data(1500, 40, 4)
    pca = ChunkedPCA(4, sample_rows=10_000, chunk_rows=128).fit(x)
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:4].T
    ours = pca.transform(x).double().numpy()
    signs = np.sign((ours * reference).sum(axis=0))           # components are defined up to sign
    np.testing.assert_allclose(ours * signs, reference, rtol=1e-3, atol=1e-3)


def test_pca_fitted_on_sample_applied_in_chunks_to_sparse():
    x = sp.csr_matrix(_low_rank_data(3000, 30, 3, seed=1))
    pca = ChunkedPCA(3, sample_rows=600, chunk_rows=250, seed=3).fit(x)
    dense = x.toarray().astype(np.float64)
    _, _, vt = np.linalg.svd(dense - dense.mean(axis=0), full_matrices=False)
    # The sampled subspace equals the full-data one: cosines of principal angles ~ 1.
    cosines = np.linalg.svd(vt[:3] @ pca.components.numpy())[1]
    assert cosines.min() > 0.999
    chunks = list(pca.transform_chunks(x))
    assert [c.shape[0] for c in chunks] == [250] * 12
    expected = (dense - pca.mean.numpy()) @ pca.components.numpy()
    np.testing.assert_allclose(torch.cat(chunks).numpy(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("store_format", ["dense", "sparse", "mmap"])
def test_reduce_features_projects_every_store_like_numpy(store_format, tmp_path):
    from gnnzero.data.datasets import _finish
    from gnnzero.data.pca import reduce_features

    x = _low_rank_data(600, 40, 4, seed=2)
    ring = np.stack([np.arange(600), (np.arange(600) + 1) % 600])
    masks = {m: np.arange(600) % 3 == i for i, m in
             enumerate(("train_mask", "val_mask", "test_mask"))}
    raw = _finish("lowrank", ring, x, np.arange(600) % 3, masks, 3,
                  "dense" if store_format == "mmap" else store_format)
    if store_format == "mmap":     # a prepared directory: the projection is written beside it
        from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset

        prepare(str(tmp_path / "prepared"), lambda: source_from_dataset(raw))
        raw = open_prepared(str(tmp_path / "prepared"))
    reduced = reduce_features(raw, 4, seed=0)
    assert reduced.num_features == 4 and raw.num_features == 40
    assert type(reduced.features).__name__ == ("MmapFeatureStore" if store_format == "mmap"
                                               else "DenseFeatureStore")
    centred = x.astype(np.float64) - x.mean(axis=0)
    reference = centred @ np.linalg.svd(centred, full_matrices=False)[2][:4].T
    ours = reduced.features.rows(torch.arange(600)).double().numpy()
    signs = np.sign((ours * reference).sum(axis=0))           # components are defined up to sign
    np.testing.assert_allclose(ours * signs, reference, rtol=1e-3, atol=1e-3)
    assert reduced.info["pca"] == {"components": 4, "raw_features": 40}
    assert torch.equal(reduced.y, raw.y) and reduced.topology is raw.topology
    if store_format == "mmap":
        assert (tmp_path / "prepared" / "pca4_seed0" / "node__x.npy").exists()


def test_reduce_features_names_the_allowed_range():
    from gnnzero.data.datasets import load_synthetic
    from gnnzero.data.pca import reduce_features
    from gnnzero.errors import GnnZeroError

    raw = load_synthetic(300, seed=1)
    with pytest.raises(GnnZeroError, match=r"--pca-components 100000 is out of range .*"
                                           r"choose 1\.\.300, or 0"):
        reduce_features(raw, 100_000)
