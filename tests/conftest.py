"""Shared fixtures: local Planetoid copies, a small synthetic graph, and a DeepSpeed launcher helper."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# GNNZERO_PLANETOID_ROOT points the tests at the raw files from a clone elsewhere.
SHARED_DATA = Path(os.environ.get("GNNZERO_PLANETOID_ROOT",
                                  REPO.parent / "shared" / "data" / "planetoid"))
sys.path.insert(0, str(REPO))


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
def small_synthetic():
    """A 3,000-node synthetic graph (deterministic)."""
    from gnnzero.data import load_dataset

    return load_dataset("synthetic", num_nodes=3000, seed=0)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run_deepspeed(script: str, args: list[str], num_procs: int = 1, timeout: int = 600,
                  cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``deepspeed --num_gpus N script args`` (CPU/gloo) and return the finished process."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [_bin("deepspeed"), "--num_gpus", str(num_procs),
           "--master_port", str(29500 + (os.getpid() % 400)), script, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_train(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``python launch/train.py args`` in a subprocess (one process, no launcher)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def read_metrics(output_dir: Path) -> dict:
    with open(output_dir / "metrics.json", encoding="utf-8") as handle:
        return json.load(handle)
