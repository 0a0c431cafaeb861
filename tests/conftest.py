"""Shared fixtures: local Planetoid copies, small synthetic graphs, launch/train.py's main().

Plain helpers (REPO, run_deepspeed, run_train, read_metrics, ...) are in tests/helpers.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import REPO, SHARED_DATA, train_entry


@pytest.fixture(scope="session")
def planetoid_root(tmp_path_factory) -> Path:
    """A temp copy of ../shared/data/planetoid (PyG writes processed/ beside raw/)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"Planetoid raw files not found at {SHARED_DATA}; set "
                    f"GNNZERO_PLANETOID_ROOT to the folder holding Cora/raw")
    root = tmp_path_factory.mktemp("planetoid")
    for name in ("Cora", "CiteSeer"):
        if (SHARED_DATA / name / "raw").exists():
            shutil.copytree(SHARED_DATA / name / "raw", root / name / "raw")
    return root


@pytest.fixture(scope="session")
def cora_link_split(planetoid_root):
    """Cora with PyG's default link split (5 % / 10 % hidden, seed 0)."""
    from gnnzero.data.datasets import load_planetoid
    from gnnzero.data.link_split import split_edges

    return split_edges(load_planetoid("cora", str(planetoid_root)), 0.05, 0.1, seed=0)


@pytest.fixture(scope="session")
def small_synthetic():
    """A 3,000-node synthetic graph (deterministic)."""
    from gnnzero.data import load_dataset

    return load_dataset("synthetic", num_nodes=3000, seed=0)


@pytest.fixture(scope="module")
def graph():
    """A 1,200-node synthetic graph (seed 3), built once per test module."""
    from gnnzero.data import load_dataset

    return load_dataset("synthetic", num_nodes=1200, seed=3)


@pytest.fixture
def run_main(capsys, monkeypatch):
    """Call launch/train.py's main() in-process (same error handling, no interpreter start-up)."""
    monkeypatch.chdir(REPO)

    def call(args: list[str]):
        with pytest.raises(SystemExit) as exc:
            train_entry().main(args)
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=exc.value.code, stdout=captured.out, stderr=captured.err)
    return call
