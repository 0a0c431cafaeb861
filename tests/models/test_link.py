"""The link predictor: its scores are the decoder on the encoder's embeddings (checked by hand),
the MLP decoder is symmetric, sparse input and every builder option work as the encoder."""
from __future__ import annotations

import pytest
import torch

from gnnzero.models import build_model
from gnnzero.models.link import LinkPredictor, MLPDecoder, build_link_model, encoder_of


def _graph(n: int = 30, f: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g) * (torch.rand(n, f, generator=g) < 0.2)
    edge_index = torch.randint(0, n, (2, 90), generator=g)
    pairs = torch.randint(0, n, (2, 40), generator=g)
    return x, edge_index, pairs


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "gin", "pinsage"])
@pytest.mark.parametrize("options", [{}, {"rank": 4, "share_weights": True}])
def test_dot_scores_are_inner_products_of_the_embeddings(arch, options):
    x, edge_index, pairs = _graph()
    torch.manual_seed(0)
    encoder = build_model(arch, 12, 16, 8, 4, dropout=0.0, **options)
    model = build_link_model(encoder, "dot", 8).eval()
    z = encoder(x, edge_index)
    expected = (z[pairs[0]] * z[pairs[1]]).sum(-1)
    torch.testing.assert_close(model(x, edge_index, None, pairs), expected)
    torch.testing.assert_close(model(x, edge_index), z)        # no pairs: the embeddings
    # CSR input reaches the first layer sparse and gives the same scores
    torch.testing.assert_close(model(x.to_sparse_csr(), edge_index, None, pairs), expected,
                               rtol=1e-5, atol=1e-5)
    assert model.accepts_sparse_input and encoder_of(model) is encoder


def test_mlp_decoder_is_symmetric_and_trains():
    x, edge_index, pairs = _graph()
    torch.manual_seed(0)
    model = build_link_model(build_model("sage", 12, 16, 8, 2, dropout=0.0), "mlp", 8)
    assert isinstance(model.decoder, MLPDecoder)
    forward, backward = model(x, edge_index, None, pairs), model(x, edge_index, None,
                                                                   pairs.flip(0))
    torch.testing.assert_close(forward, backward)
    forward.sum().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder 'cosine' is unknown; choose one of dot, mlp"):
        build_link_model(build_model("gcn", 4, 8, 8, 2), "cosine", 8)


def test_builder_makes_the_encoder_embedding_wide(small_synthetic):
    from gnnzero.builder import build_model as build_from_config
    from gnnzero.config import parse_config

    cfg = parse_config(["--ds_config", "ds_configs/zero2.json", "--task", "link", "--hidden", "32",
                        "--embedding-dim", "8", "--decoder", "mlp", "--model", "gcn"])
    model = build_from_config(cfg, small_synthetic)
    assert isinstance(model, LinkPredictor)
    assert model.encoder.out_channels == 8 and model.decoder.lins[0].in_features == 8
