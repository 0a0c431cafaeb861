"""Activation memory: bytes autograd saves during a forward pass for the backward pass.

Method ``autograd_saved_tensors``: a ``torch.autograd.graph.saved_tensors_hooks``
pack hook sees every tensor autograd keeps for backward; distinct storages are
summed, leaving out parameters and the batch's own tensors (counted elsewhere).
This is the activation memory held from forward to backward on any device; it
does not include the transient buffers of the backward pass itself (on CUDA the
allocator peak, measured beside it, does).  With activation checkpointing the
hook sees only what the checkpoint keeps (each layer's inputs), which is the point.
PyTorch has no public CPU allocator counter, hence a hook rather than an allocator.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch


def _key(tensor: torch.Tensor):
    storage = tensor.untyped_storage()
    return str(tensor.device), storage.data_ptr(), storage.nbytes()


class SavedTensorMeter:
    """Sum the distinct storages saved for backward inside :meth:`recording`."""

    def __init__(self) -> None:
        self.last_bytes = 0
        self.peak_bytes = 0

    @contextmanager
    def recording(self, exclude: Iterable[torch.Tensor] = ()) -> Iterator[None]:
        """Count saved tensors in this block, except ``exclude`` and ``nn.Parameter`` storages."""
        excluded = {_key(t)[:2] for t in exclude if isinstance(t, torch.Tensor)}
        seen: set = set()
        total = [0]

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            # A parameter, or a view of one (Linear saves ``weight.t()``), is not an activation.
            if not isinstance(tensor, torch.nn.Parameter) and \
                    not isinstance(tensor._base, torch.nn.Parameter) and \
                    tensor.layout == torch.strided:
                device, ptr, nbytes = _key(tensor)
                if nbytes and (device, ptr) not in excluded and (device, ptr) not in seen:
                    seen.add((device, ptr))
                    total[0] += nbytes
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield
        self.last_bytes = total[0]
        self.peak_bytes = max(self.peak_bytes, total[0])


def batch_tensors(batch) -> list[torch.Tensor]:
    """All tensors of a PyG ``Data``/``HeteroData`` batch."""
    return [v for store in batch.stores for v in store.values() if isinstance(v, torch.Tensor)]


def batch_bytes(batch) -> int:
    """Bytes of the batch's tensors (distinct storages)."""
    seen, total = set(), 0
    for tensor in batch_tensors(batch):
        if tensor.layout != torch.strided:
            continue
        key = _key(tensor)
        if key[:2] not in seen:
            seen.add(key[:2])
            total += key[2]
    return total
