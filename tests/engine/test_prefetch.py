"""The background batch pipeline: same batches in the same order, prepared ahead in another
thread, errors raised at the batch that hit them, and a clean stop.  (That prefetching
leaves the numerics alone is checked end to end in tests/test_run.py: the plain loop,
which never prefetches, and DeepSpeed ZeRO-0, which does, give the same loss curve.)"""
from __future__ import annotations

import threading
import time

import pytest
import torch
from torch_geometric.data import Data

from gnnzero.data import LoaderOptions, build_loader
from gnnzero.engine.batches import prepare_batch
from gnnzero.engine.prefetch import Prefetcher, batch_stream

CPU = torch.device("cpu")


def graphs(count: int):
    for i in range(count):
        yield Data(x=torch.full((3, 2), float(i)), edge_index=torch.zeros(2, 1, dtype=torch.long))


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_same_batches_in_the_same_order_as_inline(depth):
    stream = batch_stream(graphs(7), lambda b: prepare_batch(b, CPU, torch.bfloat16), depth, CPU)
    got = [b.x for b in stream]
    stream.close()
    assert [int(x[0, 0]) for x in got] == list(range(7))
    assert all(x.dtype == torch.bfloat16 for x in got)


def test_batches_are_prepared_ahead_in_another_thread():
    prepared, threads = [], set()

    def prepare(batch):
        prepared.append(int(batch.x[0, 0]))
        threads.add(threading.get_ident())
        return batch

    stream = Prefetcher(graphs(10), prepare, depth=2)
    first = next(stream)
    deadline = time.monotonic() + 5
    while len(prepared) < 4 and time.monotonic() < deadline:  # 1 taken + 2 queued + 1 waiting
        time.sleep(0.01)
    assert int(first.x[0, 0]) == 0
    assert len(prepared) >= 3, prepared       # ran ahead of the consumer ...
    assert len(prepared) <= 4, prepared       # ... but no further than the queue allows
    assert threading.get_ident() not in threads
    stream.close()


def test_an_error_is_raised_at_the_batch_that_hit_it():
    def prepare(batch):
        if int(batch.x[0, 0]) == 3:
            raise ValueError("feature row 3 is unreadable")
        return batch

    stream = Prefetcher(graphs(6), prepare, depth=2)
    assert [int(next(stream).x[0, 0]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="row 3"):
        next(stream)
    stream.close()


def test_close_stops_the_worker_mid_epoch():
    stream = Prefetcher(graphs(10_000), lambda b: b, depth=2)
    next(stream)
    stream.close()
    assert not stream._thread.is_alive()


SAMPLING = {"saint-rw": {"walk_length": 2}, "saint-edge": {}, "neighbor": {"num_neighbors": [3, 2]}}


@pytest.mark.parametrize("kind", sorted(SAMPLING))
def test_sampling_loaders_give_their_inline_batches_when_prefetched(graph, kind):
    """Each step draws from a generator of its own: built in a background thread while the main
    thread draws from torch's RNG (as dropout does), the batches are the inline ones."""
    loader = build_loader(graph, LoaderOptions(kind=kind, batch_size=64, **SAMPLING[kind]),
                          seed=4)
    assert loader.prefetch_safe
    inline = [b.n_id for b in loader.epoch(0)]
    stream, got = Prefetcher(loader.epoch(0), lambda b: b, depth=2), []
    for batch in stream:
        torch.rand(1000)
        got.append(batch.n_id)
    stream.close()
    assert len(got) == len(inline) >= 2
    assert all(torch.equal(a, b) for a, b in zip(got, inline))


def test_prefetch_only_where_a_core_is_free(monkeypatch):
    from gnnzero.engine import prefetch

    monkeypatch.setattr(prefetch.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setenv("LOCAL_SIZE", "1")
    assert prefetch.spare_cpu(CPU)            # one rank, one thread, two cores
    monkeypatch.setenv("LOCAL_SIZE", "2")
    assert not prefetch.spare_cpu(CPU)        # two ranks fill both cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # torchrun's name wins
    assert prefetch.spare_cpu(CPU)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not prefetch.spare_cpu(CPU)
    assert prefetch.spare_cpu(torch.device("cuda", 0))  # the host waits on a GPU
