"""Two DeepSpeed ranks training from one prepared directory (Cluster-GCN or GraphSAINT batches)
map the graph: neither copies the feature matrix or the edge list into private memory.

Each rank's peak private anonymous memory (``RssAnon``, sampled every 20 ms by the scale
benchmark's monitor) is compared between two graphs of the same shape -- degree, feature
width, METIS part size, batch size, evaluation chunk -- that differ only in node count (10x):
the batches cost the same, so a rank that copied the features (92 MB more on the large
graph) or the edge list (86 MB more as int64 ``edge_index``) grows by about that much;
mapped pages are file pages and do not count.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, script_module, subprocess_env

FEATURES, DEGREE, PART_NODES = 128, 30, 1000
SMALL, LARGE = 20_000, 200_000


def _prepare(out, num_nodes: int) -> None:
    subprocess.run([sys.executable, "-m", "gnnzero.prepare", "--dataset", "synthetic",
                    "--num-nodes", str(num_nodes), "--num-features", str(FEATURES),
                    "--avg-degree", str(DEGREE), "--feature-store", "dense", "--out", str(out),
                    "--num-parts", str(num_nodes // PART_NODES)], cwd=REPO, env=subprocess_env(),
                   check=True, capture_output=True, timeout=600)


# Batches of the same size on both graphs: 2 METIS parts of PART_NODES, or GraphSAINT walks from
# 1,000 roots (its edge norms, one float per edge, are written to a mapped file).
LOADERS = {"cluster": lambda n: ["--num-parts", str(n // PART_NODES), "--clusters-per-batch", "2"],
           "saint-rw": lambda n: ["--loader", "saint-rw", "--batch-size", "1000",
                                  "--saint-steps", "10"]}


def _peak_private(tmp_path, prepared, num_nodes: int, name: str, loader: str) -> list[int]:
    scale = script_module("benchmarks/scale_prepared.py")
    cmd = [str(REPO / ".venv" / "bin" / "deepspeed") if (REPO / ".venv").exists() else
           "deepspeed", "--num_gpus", "2", "--master_port", "29731", "launch/train.py",
           "--ds_config", "ds_configs/zero2.json", "--dataset", str(prepared),
           *LOADERS[loader](num_nodes), "--epochs", "1", "--hidden", "16",
           "--eval-batch-nodes", "256", "--eval-method", "layerwise", "--no-checkpoint",
           "--output-dir", str(tmp_path / f"{name}-{loader}")]
    log = tmp_path / f"{name}.log"
    _, monitor, code = scale.monitored(cmd, "launch/train.py --local_rank", log, interval=0.02,
                                       env=subprocess_env(OMP_NUM_THREADS="1"))
    assert code == 0, log.read_text()[-3000:]
    assert len(monitor.peaks) == 2
    return sorted(p["rssanon"] for p in monitor.peaks.values())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    small, large = (tmp_path_factory.mktemp(name) / "graph" for name in ("small", "large"))
    _prepare(small, SMALL)
    _prepare(large, LARGE)
    return small, large


@pytest.mark.e2e
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_two_ranks_keep_features_and_edges_out_of_private_memory(tmp_path, prepared, loader):
    small, large = prepared
    base = _peak_private(tmp_path, small, SMALL, "small", loader)
    grown = _peak_private(tmp_path, large, LARGE, "large", loader)
    feature_bytes = (LARGE - SMALL) * FEATURES * 4
    edge_index_bytes = (LARGE - SMALL) * DEGREE * 16
    for before, after in zip(base, grown):
        # A private copy of x or of the edge list would show up whole.
        assert after - before < 0.5 * min(feature_bytes, edge_index_bytes), (base, grown)
