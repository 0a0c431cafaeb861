"""Activation memory: bytes a forward pass leaves alive for the backward pass.

Method ``live_after_forward``: while the forward runs, a ``TorchDispatchMode`` notes
the storage of every tensor an operator returns (a weak reference and its size);
when the forward returns, the storages still alive are what the backward pass
needs, whoever holds them: tensors autograd saved, the inputs an activation
checkpoint keeps to recompute from, the outputs a selective checkpoint caches.
Parameters and the batch's own tensors are left out (counted elsewhere), as are
storages freed during the forward (temporaries, ZeRO-3's released gathers).  It
does not include the transient buffers of the backward pass itself (on CUDA the
allocator peak, measured beside it, does).  PyTorch has no public CPU allocator
counter, and a saved-tensors hook cannot see what a checkpoint keeps, hence
this.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..models.sparse_input import is_sparse, sparse_parts


def _key(tensor: torch.Tensor):
    storage = tensor.untyped_storage()
    return str(tensor.device), storage.data_ptr(), storage.nbytes()


class _OutputStorages(TorchDispatchMode):
    """Every storage an operator returns inside the mode: (device, pointer) -> (ref, bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided:
                device, ptr, nbytes = _key(tensor)
                known = self.storages.get((device, ptr))
                if nbytes and (known is None or known[0].expired()):  # a pointer reused
                    self.storages[(device, ptr)] = (StorageWeakRef(tensor.untyped_storage()),
                                                    nbytes)
        return out


class ActivationMeter:
    """Bytes the block inside :meth:`recording` (a forward pass) leaves alive."""

    def __init__(self) -> None:
        self.last_bytes = 0
        self.peak_bytes = 0

    @contextmanager
    def recording(self, exclude: Iterable[torch.Tensor] = (),
                  parameters: Iterable[torch.Tensor] = ()) -> Iterator[None]:
        """Measure the forward inside; ``exclude`` (the batch) and ``parameters`` (read
        when the block ends: ZeRO-3 gathers them during it) are not activations."""
        excluded = {_key(t)[:2] for t in exclude if isinstance(t, torch.Tensor)}
        tracker = _OutputStorages()
        with tracker:
            yield
        parameters = list(parameters)
        excluded |= {_key(p.data)[:2] for p in parameters if isinstance(p, torch.Tensor)}
        self.last_bytes = sum(nbytes for key, (ref, nbytes) in tracker.storages.items()
                              if key not in excluded and not ref.expired())
        self.peak_bytes = max(self.peak_bytes, self.last_bytes)


def batch_tensors(batch) -> list[torch.Tensor]:
    """All dense tensors of a PyG ``Data``/``HeteroData`` batch; a sparse tensor counts as
    its values and index arrays."""
    tensors = []
    for store in batch.stores:
        for value in store.values():
            if isinstance(value, torch.Tensor):
                tensors.extend(sparse_parts(value) if is_sparse(value) else [value])
    return tensors


def has_sparse_features(batch) -> bool:
    """Whether any store of the batch carries ``x`` as a sparse tensor."""
    return any(is_sparse(store.get("x")) for store in batch.stores)


def batch_bytes(batch) -> int:
    """Bytes of the batch's tensors as stored (distinct storages; sparse: values + indices)."""
    seen, total = set(), 0
    for tensor in batch_tensors(batch):
        key = _key(tensor)
        if key[:2] not in seen:
            seen.add(key[:2])
            total += key[2]
    return total
