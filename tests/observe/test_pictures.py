"""2-D reductions for the inspector: --method umap is UMAP itself (umap-learn), and a missing
umap-learn is a one-line error, never a silent t-SNE."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from gnnzero.errors import GnnZeroError
from gnnzero.observe.pictures import reduce_to_2d


def _features() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 16))
    return np.concatenate([c + rng.normal(0, 1, (40, 16)) for c in centres]).astype(np.float32)


@pytest.mark.e2e       # slow, not a process: umap-learn's numba kernels compile for ~15 s
def test_umap_method_is_umap_learn():
    umap = pytest.importorskip("umap")
    coords, method = reduce_to_2d(_features(), "umap", seed=3)
    expected = umap.UMAP(n_components=2, random_state=3).fit_transform(_features())
    assert method == "umap" and coords.shape == (120, 2)
    np.testing.assert_allclose(coords, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture
def without_umap(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "umap" else real(name, *a, **k))


def test_missing_umap_is_an_error_not_tsne(without_umap):
    with pytest.raises(GnnZeroError, match=r"--method umap needs umap-learn: pip install -e "
                                           r"'\.\[inspect\]'.*or use --method tsne"):
        reduce_to_2d(_features(), "umap")


def test_inspector_refuses_umap_before_rebuilding_the_model(without_umap, tmp_path, capsys):
    from gnnzero.inspect import main

    (tmp_path / "metrics.json").write_text(json.dumps({"task": "node"}))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--embeddings", "--method", "umap"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--method umap needs umap-learn" in err      # not the missing checkpoint
