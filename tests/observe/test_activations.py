"""The activation meter against the bytes an MLP provably keeps from forward to backward."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gnnzero.observe.activations import ActivationMeter

N, FEATURES, HIDDEN = 128, 16, 64
ROW = N * HIDDEN * 4  # one n x hidden fp32 tensor


def _mlp() -> nn.ModuleList:
    torch.manual_seed(0)
    return nn.ModuleList([nn.Linear(FEATURES, HIDDEN), nn.Linear(HIDDEN, HIDDEN),
                          nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, 3)])


def _block(layers, inp):
    return torch.relu(layers[2](torch.relu(layers[1](inp))))


def test_counts_what_autograd_saves_and_nothing_freed():
    layers, x = _mlp(), torch.randn(N, FEATURES)
    meter = ActivationMeter()
    with meter.recording([x], layers.parameters()):
        loss = layers[3](_block(layers, torch.relu(layers[0](x)))).sum()
    # Each ReLU saves its output, which the next Linear saves as its input: three
    # n x hidden tensors.  The pre-activation Linear outputs were freed in the forward,
    # x and the weights are excluded, the logits freed (sum() keeps no input); the
    # 1-element loss remains.
    assert meter.last_bytes == 3 * ROW + 4
    loss.backward()


def test_a_checkpoint_counts_the_input_it_keeps():
    layers, x = _mlp(), torch.randn(N, FEATURES)
    meter = ActivationMeter()
    with meter.recording([x], layers.parameters()):
        hidden = torch.relu(layers[0](x))
        out = layers[3](checkpoint(lambda h: _block(layers, h), hidden, use_reentrant=False))
        loss = out.sum()
    # The block's input (kept by the checkpoint to recompute from) and its output (saved
    # by the last Linear): two n x hidden tensors, not the three of the plain forward;
    # the logits are still held by ``out``.
    # A saved-tensors hook would not see the kept input (it is no saved tensor).
    assert meter.last_bytes == 2 * ROW + N * 3 * 4 + 4
    loss.backward()
    assert meter.peak_bytes == meter.last_bytes


def test_peak_is_the_largest_forward():
    layers = _mlp()
    meter = ActivationMeter()
    for rows in (N, 4 * N, 2 * N):
        x = torch.randn(rows, FEATURES)
        with meter.recording([x], layers.parameters()):
            loss = layers[3](_block(layers, torch.relu(layers[0](x)))).sum()
        loss.backward()
    assert meter.peak_bytes == 4 * 3 * ROW + 4
