"""Categorical columns: one shared embedding table equals one-hot times a weight."""
from __future__ import annotations

import numpy as np
import torch

from gnnzero.data.categorical import (CategoricalEmbedding, CategoricalEncoder,
                                      one_hot_columns)


def test_categorical_embedding_equals_one_hot_times_weight():
    rng = np.random.default_rng(0)
    columns = np.stack([rng.choice(["de", "fr", "us"], 200),
                        rng.integers(0, 1000, 200).astype(str),
                        rng.choice(["a", "b"], 200)], axis=1)
    encoder = CategoricalEncoder().fit(columns[:150])
    ids = encoder.transform(columns)
    widths = [np.unique(columns[:150, j]).size + 1 for j in range(3)]
    assert encoder.num_embeddings == sum(widths)
    # Each column's ids fall in its own block of the shared table.
    starts = np.cumsum([0] + widths)
    for j in range(3):
        assert bool(((ids[:, j] >= starts[j]) & (ids[:, j] < starts[j + 1])).all())
    # Values unseen in the fitted rows map to their column's id 0.
    unseen = ~np.isin(columns[:, 1], columns[:150, 1])
    assert unseen.any() and bool((ids[torch.from_numpy(unseen), 1] == starts[1]).all())
    torch.manual_seed(0)
    module = CategoricalEmbedding.from_encoder(encoder, dim=8)
    one_hot = one_hot_columns(ids, encoder.num_embeddings)
    assert torch.allclose(module(ids), one_hot @ module.bag.weight, atol=1e-6)
    assert ids.numel() * 8 < one_hot.numel() * 4 / 10       # ids are far smaller than one-hot


# ----------------------------------------------------------- from a user file, in the model

def _user_file(tmp_path, n: int = 400, x_cat=None):
    from gnnzero.data.datasets import load_synthetic

    ds = load_synthetic(n, seed=2, feature_format="dense")
    rng = np.random.default_rng(1)
    if x_cat is None:
        x_cat = np.stack([ds.y.numpy() * 3 + rng.integers(0, 3, n), rng.integers(0, 90, n),
                          rng.integers(-5, 5, n)], 1)
    path = tmp_path / "graph.pt"
    torch.save({"edge_index": ds.edge_index, "x": ds.features.rows(torch.arange(n)),
                "y": ds.y, **ds.masks, "x_cat": torch.as_tensor(x_cat)}, path)
    return path, x_cat


def _cfg(path, *extra):
    from gnnzero.config import parse_config

    return parse_config(["--ds_config", "ds_configs/zero2.json", "--dataset", str(path),
                         "--loader", "full", "--hidden", "16", "--dropout", "0", *extra])


def test_a_files_x_cat_is_encoded_and_batched(tmp_path):
    from gnnzero.builder import build_dataset, build_loader

    path, x_cat = _user_file(tmp_path)
    dataset = build_dataset(_cfg(path, "--categorical"))
    expected = CategoricalEncoder().fit_transform(x_cat)
    assert torch.equal(dataset.categorical, expected)
    assert dataset.categorical_vocabulary == CategoricalEncoder().fit(x_cat).num_embeddings
    batch = next(build_loader(_cfg(path, "--categorical"), dataset).epoch(0))
    assert torch.equal(batch.x_cat, expected[batch.n_id])
    assert batch.x.layout == torch.strided          # the embedding is concatenated to x


def test_the_model_reads_x_and_the_summed_embeddings(tmp_path):
    """Logits equal the plain GNN on ``[x, one_hot(ids) @ W]``, and layer-wise inference (the
    final evaluation) equals the whole-graph forward."""
    from gnnzero.builder import build_dataset, build_model
    from gnnzero.engine.layerwise import layerwise_inference
    from gnnzero.models.builders import forward_batch
    from gnnzero.data.loaders import with_node_fields
    from torch_geometric.nn.models.basic_gnn import BasicGNN

    path, _ = _user_file(tmp_path)
    cfg = _cfg(path, "--categorical", "--categorical-dim", "5", "--model", "sage")
    dataset = build_dataset(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, dataset).eval()
    assert model.convs[0].in_channels == dataset.num_features + 5
    graph = with_node_fields(dataset.structure(), dataset)
    weight = model.input_encoder.embed.bag.weight
    manual = torch.cat([graph.x, one_hot_columns(graph.x_cat, weight.size(0)) @ weight], 1)
    with torch.no_grad():
        logits = forward_batch(model, graph)
        expected = BasicGNN.forward(model, manual, graph.edge_index)   # PyG's own stack
        layerwise = layerwise_inference(model, dataset, torch.device("cpu"), batch_size=128)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layerwise.logits, logits, rtol=1e-5, atol=1e-5)


def test_categorical_input_errors_are_one_line(tmp_path, capsys):
    import pytest

    from gnnzero.builder import build_dataset
    from gnnzero.errors import GnnZeroError
    from gnnzero.utils.settings import SettingError

    with pytest.raises(GnnZeroError, match="--categorical: synthetic has no categorical "
                                           "columns; give a .pt / .npz file"):
        build_dataset(_cfg("synthetic", "--categorical", "--num-nodes", "300"))
    bad, _ = _user_file(tmp_path, x_cat=np.random.default_rng(0).random((400, 2)))
    with pytest.raises(GnnZeroError, match=r"x_cat must be an integer array \[num_nodes, "
                                           r"columns\] = \[400, C\], got float64"):
        build_dataset(_cfg(bad, "--categorical"))
    with pytest.raises(SettingError, match="--categorical-dim applies with --categorical only"):
        _cfg("synthetic", "--categorical-dim", "4")
    with pytest.raises(SettingError, match="--task node only"):
        _cfg("synthetic", "--categorical", "--task", "link")
    path, _ = _user_file(tmp_path)
    assert build_dataset(_cfg(path)).categorical is None     # unused without the flag
    assert "holds 3 categorical columns (x_cat), unused; add --categorical" in \
        capsys.readouterr().out


def test_explain_is_refused_on_a_categorical_run_before_loading_it(tmp_path, capsys):
    import json

    import pytest

    from gnnzero.inspect import main

    path, _ = _user_file(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _cfg(path, "--categorical").save(str(run_dir))
    (run_dir / "metrics.json").write_text(json.dumps({"task": "node"}))
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), "--explain", "3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--explain perturbs x alone" in err and "no checkpoint" not in err
