"""Prepare the next batches in a background thread while the current step computes.

Building a batch (slicing the CSR, gathering feature rows from the store,
casting, the host-to-device copy) is host work that would otherwise sit
between two steps; here a worker thread runs it ``depth`` batches ahead, as
SALIENT's pipeline does.  numpy slicing and torch's kernels release the GIL, so
the two overlap.  On CUDA the copy goes from pinned memory on a side stream,
and the consuming stream waits for it before it touches the batch.

Only loaders whose batches are drawn from their own seeded generators may be
prefetched (``GraphLoader.prefetch_safe``): a sampler that draws from torch's
global RNG would interleave its draws with dropout's, and a run would no longer
repeat itself (or resume exactly).  The batches and their order are the same
with and without prefetching.

What it buys depends on the host.  On a 2-core CPU machine with one rank (the paired
benchmark, ``benchmarks/results/paired_cpu*.md``) the thread took 1.2-1.5 of the 2.0-2.3 s
of batch building off the step, yet the step's forward ran 1.1-1.6 s longer beside it: the
second core is not free of the first (shared caches and memory bandwidth, or host threads).
Holding the worker back until the step entered backward, where no Python runs, moved that
loss into backward (+1.9-2.4 s there at ZeRO-2) and was reverted.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Iterator, Optional

import torch

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher:
    """Iterate ``prepare(b)`` for ``b`` in ``batches``, computed ``depth`` items ahead.

    ``close()`` (also on garbage collection of the iterator's owner) stops the worker;
    an exception raised in the worker is raised again here, at the batch it hit.
    """

    def __init__(self, batches: Iterator, prepare: Callable, depth: int = 2,
                 device: Optional[torch.device] = None) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._stream = (torch.cuda.Stream(device) if device is not None and device.type == "cuda"
                        else None)
        self._thread = threading.Thread(target=self._work, args=(batches, prepare),
                                        name="gnnzero-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, batches: Iterator, prepare: Callable) -> None:
        try:
            for batch in batches:
                if self._stream is not None:
                    with torch.cuda.stream(self._stream):
                        batch = prepare(batch)
                        event = torch.cuda.Event()
                        event.record(self._stream)
                    item = (batch, event)
                else:
                    item = (prepare(batch), None)
                if not self._put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        batch, event = item
        if event is not None:
            torch.cuda.current_stream().wait_event(event)
            _record_stream(batch, torch.cuda.current_stream())
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _record_stream(batch, stream) -> None:
    """Tell the caching allocator the batch's tensors are used on ``stream`` now."""
    for store in batch.stores:
        for value in store.values():
            if isinstance(value, torch.Tensor) and value.is_cuda:
                value.record_stream(stream)


def spare_cpu(device: torch.device) -> bool:
    """Whether a prefetch thread would run beside the step rather than take its core.

    On a GPU the step runs on the device and the host mostly waits: always.  On a CPU only
    when this node's ranks, each with ``torch.get_num_threads()`` compute threads, leave a
    core free (``LOCAL_SIZE``/``LOCAL_WORLD_SIZE`` from the deepspeed/torchrun launcher).
    """
    if device.type == "cuda":
        return True
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > local * torch.get_num_threads()


def batch_stream(batches: Iterator, prepare: Callable, depth: int,
                 device: torch.device):
    """``prepare`` over ``batches``: in a :class:`Prefetcher` when ``depth`` > 0, else inline."""
    if depth <= 0:
        return _Inline(batches, prepare)
    return Prefetcher(batches, prepare, depth, device)


class _Inline:
    """The same interface as :class:`Prefetcher`, preparing each batch when it is asked for."""

    def __init__(self, batches: Iterator, prepare: Callable) -> None:
        self._batches, self._prepare = batches, prepare

    def __iter__(self) -> "_Inline":
        return self

    def __next__(self):
        return self._prepare(next(self._batches))

    def close(self) -> None:
        close = getattr(self._batches, "close", None)
        if callable(close):
            close()
