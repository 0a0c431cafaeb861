"""Model builders: closed-form parameter counts, low-rank init of the maps reading raw features,
argument validation, forward_batch, activation checkpointing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gnnzero.models import LowRankLinear, build_model, count_parameters
from tests.models.common import ARCHS, HEADS, random_graph, star_graph


IN, HID, OUT = 20, 16, 5


def linear_weights(i: int, o: int, rank) -> int:
    """Weights of one linear map: ``i*o`` dense, ``r*(i+o)`` factorised (dense if r >= min)."""
    return i * o if rank is None or rank >= min(i, o) else rank * (i + o)


def conv_layout(arch: str, i: int, o: int, is_out: bool) -> tuple[list, int]:
    """(linear maps as (in, out, has_bias), per-layer non-linear parameters) of one conv."""
    if arch == "gcn":      # GCNConv: lin (no bias) + conv bias
        return [(i, o, False)], o
    if arch == "sage":     # SAGEConv: lin_l (bias) + lin_r (no bias)
        return [(i, o, True), (i, o, False)], 0
    if arch == "gin":      # GINConv(MLP([i, o, o])), eps fixed (a buffer)
        return [(i, o, True), (o, o, True)], 0
    if arch == "pinsage":  # lin_pool (bias) + lin_root (bias) + lin_neigh (no bias)
        return [(i, o, True), (i, o, True), (o, o, False)], 0
    if arch == "gat":      # lin (no bias) to heads*c; att_src + att_dst; bias heads*c or c
        concat = not is_out
        c = o // HEADS if concat else o
        return [(i, HEADS * c, False)], 2 * HEADS * c + (HEADS * c if concat else c)
    raise AssertionError(arch)


def expected_count(arch: str, num_layers: int, rank, share: bool, jk=None) -> int:
    dims = [(IN, HID)] + [(HID, HID)] * (num_layers - 2) + [(HID, OUT if jk is None else HID)]
    if num_layers == 1:
        dims = [(IN, OUT if jk is None else HID)]
    last_hidden = num_layers if jk is not None else num_layers - 1
    shared = set(range(1, last_hidden)) if share and last_hidden - 1 >= 2 else set()
    total, shared_weights = 0, None
    for index, (i, o) in enumerate(dims):
        is_out = jk is None and index == num_layers - 1
        lins, extra = conv_layout(arch, i, o, is_out)
        biases = sum(lo for _, lo, has_bias in lins if has_bias)
        weights = sum(linear_weights(li, lo, rank) for li, lo, _ in lins)
        total += extra + biases
        if index in shared:
            shared_weights = weights      # counted once below
        else:
            total += weights
    if shared_weights is not None:
        total += shared_weights
    if jk == "cat":
        total += num_layers * HID * OUT + OUT   # final Linear after JumpingKnowledge
    return total


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("rank", [None, 4, 5, 16])
def test_parameter_count_matches_closed_form(arch, share, rank):
    # rank 5: first and hidden layers factorised, the 16->5 output map falls back to dense;
    # rank 16 >= min(in, out) everywhere: every map stays dense.
    model = build_model(arch, IN, HID, OUT, 4, share_weights=share, rank=rank,
                        heads=HEADS if arch == "gat" else 1)
    assert count_parameters(model) == expected_count(arch, 4, rank, share)


@pytest.mark.parametrize("num_layers,jk", [(1, None), (2, None), (3, "cat"), (5, None)])
def test_parameter_count_other_depths(num_layers, jk):
    model = build_model("sage", IN, HID, OUT, num_layers, share_weights=True, rank=4, jk=jk)
    assert count_parameters(model) == expected_count("sage", num_layers, 4, True, jk)


def test_sage4_hidden256_rank16_shared_is_8x_smaller():
    dense = build_model("sage", 1433, 256, 7, 4)
    small = build_model("sage", 1433, 256, 7, 4, rank=16, share_weights=True)
    # dense: 1433->256, 2x 256->256, 256->7 SAGE convs (lin_l with bias, lin_r without)
    assert count_parameters(dense) == 2 * 1433 * 256 + 256 + 2 * (2 * 256 * 256 + 256) \
        + 2 * 256 * 7 + 7
    # the 256->7 output maps stay dense: rank 16 >= min(256, 7)
    low = 2 * 16 * (1433 + 256) + 256 + 2 * 16 * (256 + 256) + 2 * 256 + 2 * 256 * 7 + 7
    assert count_parameters(small) == low
    assert count_parameters(dense) / count_parameters(small) >= 8


def test_builder_uses_input_init_only_on_maps_reading_raw_features():
    model = build_model("sage", 1433, 256, 7, 4, rank=16)
    inits = {name: m.init for name, m in model.named_modules()
             if isinstance(m, LowRankLinear) and not m.dense}
    assert inits["convs.0.lin_l"] == inits["convs.0.lin_r"] == "input"
    assert {inits[f"convs.{i}.lin_{s}"] for i in (1, 2) for s in "lr"} == {"spectral"}
    pinsage = build_model("pinsage", 500, 64, 3, 2, rank=8)
    assert pinsage.convs[0].lin_root.init == "input" and pinsage.convs[0].lin_neigh.init == "spectral"
    with pytest.raises(ValueError, match="init 'svd' is unknown; allowed values: spectral, input"):
        LowRankLinear(8, 8, 2, init="svd")


@pytest.mark.parametrize("kwargs,words", [
    (dict(arch="gpt"), ["arch", "gcn, sage, gat, gin, pinsage"]),
    (dict(rank=0), ["rank", ">= 1"]),
    (dict(rank=-3), ["rank", ">= 1"]),
    (dict(num_layers=0), ["num_layers", ">= 1"]),
    (dict(arch="gat", heads=3), ["heads", "divisors of 16"]),
])
def test_bad_arguments_raise_value_error(kwargs, words):
    args = dict(arch="sage", in_channels=8, hidden_channels=16, out_channels=3, num_layers=2)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        build_model(**args)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_forward_batch_passes_graphsaint_edge_norm():
    from torch_geometric.data import Data

    from gnnzero.models import forward_batch

    model = build_model("gcn", 12, 8, 3, 2, dropout=0.0).eval()
    x = torch.randn(30, 12)
    edge_index, weight = random_graph()
    with torch.no_grad():
        expected = model(x, edge_index, weight)
        torch.testing.assert_close(forward_batch(model, Data(x=x, edge_index=edge_index,
                                                             edge_norm=weight)), expected)
        torch.testing.assert_close(forward_batch(model, Data(x=x, edge_index=edge_index,
                                                             edge_weight=weight)), expected)


@pytest.mark.parametrize("shared, extra", [(False, {}), (True, {}), (False, {"jk": "cat"}),
                                           (False, {"norm": "batch"})],
                         ids=["dense", "shared", "jk-cat", "batch-norm"])
def test_activation_checkpointing_gives_the_same_gradients(shared, extra):
    """Recomputing each layer (and its activation) in backward changes nothing."""
    from gnnzero.models import build_model

    x, edge_index = star_graph()
    x, edge_index = x[:300], edge_index[:, (edge_index < 300).all(0)]
    y = torch.arange(300) % 4
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model("sage", 8, 16, 4, 4, dropout=0.5, share_weights=shared,
                            rank=4 if shared else None, activation_checkpointing=checkpointing,
                            **extra)
        torch.manual_seed(1)
        F.cross_entropy(model(x, edge_index), y).backward()
        grads.append({n.replace(".layer.", "."): p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_activation_checkpointing_keeps_layer_inputs_and_dropout_masks():
    """With the activation inside each checkpoint, a 3-layer model's forward leaves alive for
    backward exactly the two hidden layers' inputs (dropout's outputs, which the checkpoints
    keep) and dropout's two boolean masks (BoolMaskDropout: F.dropout on CPU would keep
    float noise, 4 bytes an element); ReLU's outputs are recomputed, not kept."""
    from gnnzero.observe.activations import ActivationMeter

    x, edge_index = star_graph()
    n = x.size(0)
    torch.manual_seed(0)
    model = build_model("sage", x.size(1), HID, OUT, 3, dropout=0.5,
                        activation_checkpointing=True)
    meter = ActivationMeter()
    with meter.recording([x, edge_index], model.parameters()):
        loss = model(x, edge_index).sum()
    assert meter.last_bytes == 2 * (n * HID * 4 + n * HID) + 4     # + the 1-element loss
    loss.backward()


def test_activation_checkpointing_under_a_norm_recomputes_the_convolution_only():
    """BatchNorm's running statistics must not be updated twice: with a norm between
    convolution and activation, the activation stays outside the checkpoint."""
    model = build_model("sage", IN, HID, OUT, 3, norm="batch", activation_checkpointing=True)
    assert model.act is not None
    assert all(conv.act is None for conv in model.convs)


def test_bool_mask_dropout_behaves_like_torch_dropout_and_keeps_one_byte_an_element():
    """Scaling, drop rate and gradient as ``nn.Dropout``; backward keeps a bool mask."""
    from gnnzero.models.builders import BoolMaskDropout
    from gnnzero.observe.activations import ActivationMeter

    x = torch.randn(4000, 64, requires_grad=True)
    dropout = BoolMaskDropout(0.3)
    meter = ActivationMeter()
    with meter.recording([x], []):
        out = dropout(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    assert meter.last_bytes == out.numel() * (4 + 1)      # the output and its bool mask
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    assert dropout.eval()(x) is x
