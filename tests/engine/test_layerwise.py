"""Exact layer-wise inference through the shared scratch array equals a whole-graph forward, on
one rank in-process and on two DeepSpeed ranks over a prepared directory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset
from gnnzero.engine.layerwise import _chunks, layerwise_inference
from tests.engine.workers.layerwise_cases import LAYERWISE_CASES, seeded_model
from tests.helpers import run_deepspeed


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, small_synthetic_module):
    out = tmp_path_factory.mktemp("layerwise") / "graph"
    prepare(str(out), lambda: source_from_dataset(small_synthetic_module))
    return out


@pytest.fixture(scope="module")
def small_synthetic_module():
    from gnnzero.data import load_dataset

    return load_dataset("synthetic", num_nodes=1800, seed=5)


def _reference(name: str, dataset) -> torch.Tensor:
    model = seeded_model(name, dataset)
    with torch.no_grad():
        return model(dataset.features.rows(torch.arange(dataset.num_nodes)), dataset.edge_index)


@pytest.mark.parametrize("name", list(LAYERWISE_CASES))
def test_one_rank_through_the_scratch_folder_equals_the_full_forward(prepared, name, tmp_path):
    dataset = open_prepared(str(prepared))
    scratch = tmp_path / "scratch"
    out = layerwise_inference(seeded_model(name, dataset), dataset, torch.device("cpu"),
                              batch_size=128, scratch_dir=str(scratch))
    torch.testing.assert_close(out.logits, _reference(name, dataset), atol=1e-5, rtol=1e-5)
    assert not list(scratch.glob("*.npy"))          # scratch files removed afterwards


def test_chunks_are_as_many_on_every_rank_and_cover_each_rank_once():
    indptr = np.cumsum(np.concatenate(([0], np.random.default_rng(0).integers(0, 40, 1000))))
    bounds = [0, 100, 1000]                # rank 1 holds 9x the rows and edges of rank 0
    per_rank = [_chunks(indptr, bounds, r, batch_size=64, edge_budget=500) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    for rank, chunks in enumerate(per_rank):
        rows = [range(a, b) for a, b, keep in chunks if keep]
        assert sorted(i for r in rows for i in r) == list(range(bounds[rank], bounds[rank + 1]))
        assert all(indptr[b] - indptr[a] <= 2 * 500 for a, b, _ in chunks)


@pytest.mark.e2e
def test_two_ranks_write_disjoint_rows_that_equal_the_full_forward(prepared, tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    proc = run_deepspeed("tests/engine/workers/layerwise_worker.py",
                         [str(prepared), str(out), str(scratch)], num_procs=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = open_prepared(str(prepared))
    for name in LAYERWISE_CASES:
        parts = [torch.load(out / f"{name}-rank{r}.pt") for r in range(2)]
        ids = torch.cat([p["node_ids"] for p in parts])
        assert torch.equal(ids, torch.arange(dataset.num_nodes))      # disjoint, complete
        logits = torch.cat([p["logits"] for p in parts])
        torch.testing.assert_close(logits, _reference(name, dataset), atol=1e-5, rtol=1e-5)
    assert not list(scratch.rglob("*.npy"))
