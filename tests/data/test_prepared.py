"""The prepared directory: written once (atomically, race-free), mapped read-only, the same
graph and the same batches as the in-memory path, and one-line errors for bad directories."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gnnzero.data import LoaderOptions, build_loader, load_dataset
from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset
from gnnzero.errors import GnnZeroError
from tests.helpers import REPO, assert_one_line_error, run_train, subprocess_env


def _prepare(tmp_path, dataset, name="prepared", **options):
    out = tmp_path / name
    assert prepare(str(out), lambda: source_from_dataset(dataset, chunk_rows=257), **options)
    return out


def test_prepared_directory_holds_the_same_graph_mapped_read_only(graph, tmp_path):
    out = _prepare(tmp_path, graph)
    mapped = open_prepared(str(out))
    assert isinstance(mapped.topology.indices, np.memmap) and mapped.topology.indices.dtype == np.int32
    assert isinstance(mapped.topology.indptr, np.memmap)
    assert np.array_equal(mapped.topology.indptr, graph.topology.indptr)
    assert np.array_equal(mapped.topology.indices, graph.topology.indices)
    rows = torch.randperm(graph.num_nodes)[:300]
    assert torch.equal(mapped.features.rows(rows), graph.features.rows(rows))
    assert torch.equal(mapped.y, graph.y) and mapped.fingerprint() == graph.fingerprint()
    assert all(torch.equal(mapped.masks[m], graph.masks[m]) for m in graph.masks)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_nodes"] == graph.num_nodes and manifest["num_edges"] == graph.num_edges
    assert manifest["features"] == {"layout": "sparse", "dtype": "float32"}
    assert not list(tmp_path.glob("prepared.tmp-*"))


@pytest.mark.parametrize("storage,torch_dtype", [("float16", torch.float16),
                                                 ("bfloat16", torch.bfloat16)])
def test_low_precision_dense_storage_reads_back_as_torch_rounds(storage, torch_dtype, tmp_path):
    from gnnzero.data.datasets import _finish

    x = np.random.default_rng(0).normal(size=(500, 24)).astype(np.float32)
    ring = np.stack([np.arange(500), (np.arange(500) + 1) % 500])
    masks = {m: np.arange(500) % 3 == i for i, m in enumerate(("train_mask", "val_mask",
                                                                "test_mask"))}
    dense = _finish("x", ring, x, np.arange(500) % 4, masks, 4, "dense")
    out = _prepare(tmp_path, dense, storage=storage, sparse=False)
    assert (out / "x.npy").stat().st_size < x.nbytes * 0.6
    back = open_prepared(str(out)).features.rows(torch.arange(500))
    assert torch.equal(back, torch.from_numpy(x).to(torch_dtype).float())


def test_dense_layout_from_sparse_source_is_written_block_by_block(graph, tmp_path):
    out = _prepare(tmp_path, graph, sparse=False)
    assert np.load(out / "x.npy", mmap_mode="r").shape == (graph.num_nodes, graph.num_features)
    rows = torch.arange(0, graph.num_nodes, 7)
    assert torch.equal(open_prepared(str(out)).features.rows(rows), graph.features.rows(rows))


def test_cluster_batches_from_the_prepared_directory_equal_the_in_memory_ones(graph, tmp_path):
    mapped = open_prepared(str(_prepare(tmp_path, graph)))
    opts = LoaderOptions(kind="cluster", num_parts=10, clusters_per_batch=3,
                         cache_dir=str(tmp_path / "cache"))
    assert (tmp_path / "prepared").exists()
    in_memory = list(build_loader(graph, opts, seed=4).epoch(1))
    from_dir = build_loader(mapped, opts, seed=4)
    assert (tmp_path / "prepared" / "parts" / "metis_10").is_dir()   # partitions follow the dir
    for a, b in zip(in_memory, from_dir.epoch(1), strict=True):
        assert a.x.layout == b.x.layout == torch.sparse_csr
        assert torch.equal(a.x.to_dense(), b.x.to_dense())
        for key in ("n_id", "edge_index", "y", "loss_mask"):
            assert torch.equal(a[key], b[key]), key


def test_loss_curve_from_the_prepared_directory_equals_the_in_memory_run(tmp_path):
    from gnnzero.config import RunConfig
    from gnnzero.data.options import DataConfig
    from gnnzero.engine.options import TrainConfig
    from gnnzero.run import run

    dataset = load_dataset("synthetic", num_nodes=1500, seed=0)
    out = _prepare(tmp_path, dataset)
    curves = []
    for source in ("synthetic", str(out)):
        cfg = RunConfig(ds_config=str(REPO / "ds_configs" / "zero0.json"),
                        data=DataConfig(dataset=source, num_nodes=1500,
                                        cache_dir=str(tmp_path / "cache")),
                        loader=LoaderOptions(num_parts=6, clusters_per_batch=2),
                        train=TrainConfig(epochs=2, output_dir=str(tmp_path / f"run{len(curves)}")))
        curves.append(run(cfg, plain=True))
    assert curves[0]["loss_curve"] == curves[1]["loss_curve"] and len(curves[0]["loss_curve"]) > 2
    assert curves[0]["test_accuracy"] == curves[1]["test_accuracy"]


PREPARE = [sys.executable, "-m", "gnnzero.prepare", "--dataset", "synthetic"]


@pytest.mark.e2e
def test_two_concurrent_prepares_end_with_one_complete_copy(tmp_path):
    out = tmp_path / "shared"
    cmd = PREPARE + ["--num-nodes", "60000", "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-800:] for r in results]
    built = sorted(json.loads(r[0].strip().splitlines()[-1])["prepared_by_this_call"]
                   for r in results)
    assert built == [False, True]                  # one wrote it, the other waited and reused it
    assert open_prepared(str(out)).num_nodes == 60000
    assert not list(tmp_path.glob("shared.tmp-*"))


@pytest.mark.e2e
def test_a_killed_prepare_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "graph"
    cmd = PREPARE + ["--num-nodes", "400000", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob("graph.tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)                                   # well inside the build
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("graph.tmp-*")) and not out.exists()
    with pytest.raises(GnnZeroError, match="is not a folder"):
        open_prepared(str(out))
    assert_one_line_error(run_train(["--ds_config", "ds_configs/zero0.json", "--dataset",
                                     str(out)]), "does not exist")
    # The next prepare takes the lock, removes the half-built copy and finishes.
    finished = subprocess.run(PREPARE + ["--num-nodes", "2000", "--out", str(out)], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-800:]
    assert open_prepared(str(out)).num_nodes == 2000 and not list(tmp_path.glob("graph.tmp-*"))


@pytest.fixture
def prepared_copy(graph, tmp_path):
    out = _prepare(tmp_path, graph)
    return out


def _manifest_edit(out, **changes):
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage,needles", [
    ("missing", ("is not a folder", "gnnzero.prepare")),
    ("foreign", ("manifest.json is missing", "not a prepared directory", "gnnzero.prepare")),
    ("format", ("is not a gnnzero manifest",)),
    ("version", ("format version 99", "reads version 1", "prepare the directory again")),
    ("truncated", ("indices.npy is truncated", "prepare the directory again")),
    ("missing-array", ("x_data.npy is missing", "prepare the directory again")),
])
def test_bad_directories_get_one_line_errors(prepared_copy, damage, needles):
    _damage(prepared_copy, damage)
    with pytest.raises(GnnZeroError) as caught:
        open_prepared(str(prepared_copy))
    message = str(caught.value)
    assert "\n" not in message and all(n in message for n in needles), message


@pytest.mark.e2e
@pytest.mark.parametrize("damage,needles", [
    ("version", ("format version 99", "prepare the directory again")),
    ("truncated", ("indices.npy is truncated", "prepare the directory again")),
])
def test_train_py_refuses_a_bad_directory_in_one_line(prepared_copy, tmp_path, damage, needles):
    _damage(prepared_copy, damage)
    proc = run_train(["--ds_config", "ds_configs/zero0.json", "--dataset", str(prepared_copy),
                      "--output-dir", str(tmp_path / "run")])
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "run").exists()       # refused before anything was written


def _damage(out, damage: str) -> None:
    if damage == "missing":
        shutil.rmtree(out)
    elif damage == "foreign":
        (out / "manifest.json").unlink()
    elif damage == "format":
        _manifest_edit(out, format="graphbolt")
    elif damage == "version":
        _manifest_edit(out, version=99)
    elif damage == "truncated":
        data = (out / "indices.npy").read_bytes()
        (out / "indices.npy").write_bytes(data[:len(data) // 2])
    else:
        (out / "x_data.npy").unlink()


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_a_dense_user_file_is_prepared_without_holding_its_features(tmp_path, suffix):
    import tracemalloc

    from gnnzero.data.datasets import load_user_file, user_file_source
    from gnnzero.data.prepared import write_prepared

    n, f = 4000, 500
    x = np.random.default_rng(1).normal(size=(n, f)).astype(np.float32)       # 8 MB
    fields = {"edge_index": np.stack([np.arange(n), (np.arange(n) + 1) % n]),
              "y": np.arange(n) % 5, **{m: np.arange(n) % 3 == i for i, m in
                                      enumerate(("train_mask", "val_mask", "test_mask"))}}
    path = tmp_path / f"graph{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, **fields)
    else:
        torch.save({"x": torch.from_numpy(x), **{k: torch.from_numpy(v) for k, v in
                                                 fields.items()}}, path)
    out = tmp_path / "out"
    out.mkdir()
    tracemalloc.start()
    write_prepared(str(out), user_file_source(str(path), chunk_rows=256), sparse=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes / 4, peak                  # blocks of 256 rows, never the matrix
    mapped, reference = open_prepared(str(out)), load_user_file(str(path))
    assert torch.equal(mapped.features.rows(torch.arange(n)), torch.from_numpy(x))
    assert np.array_equal(mapped.topology.indices, reference.topology.indices)
    assert torch.equal(mapped.y, reference.y)


def test_preparing_an_existing_directory_adds_only_the_missing_partitions(graph, tmp_path):
    out = _prepare(tmp_path, graph, num_parts=(4,))
    first = (out / "parts" / "metis_4" / "part.npy").stat().st_mtime_ns
    assert not prepare(str(out), lambda: pytest.fail("an existing directory is not rebuilt"),
                       num_parts=(4, 6))
    assert (out / "parts" / "metis_6" / "meta.json").exists()
    assert (out / "parts" / "metis_4" / "part.npy").stat().st_mtime_ns == first


@pytest.mark.parametrize("damage,needles", [
    ("truncated", ("indices.npy is truncated", "prepare the directory again")),
    ("missing-array", ("x_data.npy is missing",)),
])
def test_the_source_check_reads_headers_and_maps_nothing(prepared_copy, damage, needles,
                                                         monkeypatch):
    """``check_dataset_source`` (before DeepSpeed starts) finds what ``open_prepared`` would,
    from the manifest and the ``.npy`` headers alone: the directory is mapped once, by the
    load."""
    from gnnzero.data.datasets import check_dataset_source

    def no_map(*args, **kwargs):
        raise AssertionError("check_dataset_source mapped an array")

    with monkeypatch.context() as patch:
        patch.setattr(np, "load", no_map)
        check_dataset_source(str(prepared_copy), None)        # intact: passes
        _damage(prepared_copy, damage)
        with pytest.raises(GnnZeroError) as caught:
            check_dataset_source(str(prepared_copy), None)
    assert all(n in str(caught.value) for n in needles), caught.value
