"""The activation meter against the bytes an MLP provably saves for backward."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gnnzero.observe.activations import SavedTensorMeter


def _mlp(features: int, hidden: int) -> nn.ModuleList:
    torch.manual_seed(0)
    return nn.ModuleList([nn.Linear(features, hidden), nn.Linear(hidden, hidden),
                          nn.Linear(hidden, 3)])


def test_saved_tensor_meter_counts_relu_outputs_and_checkpoint_halves_them():
    n, features, hidden = 128, 16, 64
    layers, x = _mlp(features, hidden), torch.randn(n, features)
    exclude = [x, *[p for p in layers.parameters()]]

    def block(inp):
        return torch.relu(layers[1](torch.relu(layers[0](inp))))

    meter = SavedTensorMeter()
    with meter.recording(exclude):
        layers[2](block(x)).sum().backward()
    # ReLU saves its output and the next Linear saves the same tensor as input: one n x hidden
    # fp32 tensor per ReLU; x and the weights are excluded.
    assert meter.last_bytes == 2 * n * hidden * 4

    with meter.recording(exclude):
        layers[2](checkpoint(block, x, use_reentrant=False)).sum().backward()
    # Checkpointed: only the block's input (x, excluded) and its output (saved by the last
    # Linear) stay alive until backward.
    assert meter.last_bytes == n * hidden * 4
    assert meter.peak_bytes == 2 * n * hidden * 4
