"""`benchmarks/gpu_check.sh` without a GPU: it parses, its wheel list is the Makefile's and covers
DeepSpeed's requirements, it installs the way the device tool needs, and its report fits what
the tool brings back.  The check itself runs only on a lent GPU (benchmarks/README.md)."""
from __future__ import annotations

import importlib.metadata
import re
import subprocess

import pytest

from tests.helpers import REPO, script_module

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _make_variable(name: str) -> list[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(rf"^{name}\s*:?=(.*)$", text, re.M)
    assert found, f"Makefile has no {name}"
    return found.group(1).split()


def _script_variable(name: str) -> list[str]:
    found = re.search(rf'^{name}="([^"]*)"', SCRIPT.read_text(), re.M)
    assert found, f"gpu_check.sh has no {name}"
    return found.group(1).split()


@pytest.mark.e2e
def test_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_wheel_list_is_the_makefiles():
    assert "gpu-wheels:" in (REPO / "Makefile").read_text()
    assert _make_variable("GPU_WHEEL_NAMES") == _script_variable("GPU_WHEELS")


@pytest.mark.parametrize("dist", ["deepspeed", "pydantic", "pydantic-core", "pymetis"])
def test_wheels_cover_what_the_carried_packages_require(dist):
    """Each non-optional requirement is carried or named as being in the GPU image."""
    have = set(_script_variable("GPU_WHEELS")) | set(_script_variable("GPU_IMAGE_HAS"))
    needed = set()
    for requirement in importlib.metadata.requires(dist) or []:
        if "extra ==" in requirement:
            continue
        needed.add(re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    assert needed <= have, needed - have


def test_installs_from_the_carried_wheels_only():
    text = SCRIPT.read_text().replace("\\\n", " ")
    install = re.search(r"python3 -m pip install ([^|&;\n]*)", text).group(1).split()
    for flag in ("--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"):
        assert flag in install
    assert install[install.index("--target") + 1] == "/tmp/site" and ".whl/*.whl" in install
    assert "PYTHONPATH=/tmp/site:$PWD" in text
    assert "set -u -o pipefail" in text and "export PYTHONUNBUFFERED=1" in text
    assert "/.whl/" in (REPO / ".gitignore").read_text().split()


def test_report_without_runs_and_what_comes_back(tmp_path):
    """No run finished: the report says so (and fails only when final); what goes under $OUT
    fits the device tool (at most 8 files, plain names, one level)."""
    check = script_module("benchmarks/gpu_check.py")
    work, results, out = tmp_path / "work", tmp_path / "results", tmp_path / "out"
    work.mkdir()
    (work / "parts.tsv").write_text("grid\t124\t420\tpython benchmarks/run.py --tag gpu\n")
    args = ["report", "--work", str(work), "--results", str(results), "--out", str(out)]
    assert check.main(args) == 0
    assert check.main(args + ["--final"]) == 1
    text = (results / "bench_gpu.md").read_text()
    assert "| grid | timed out | 420 |" in text and text.count("No records: no run finished") == 2
    (out / "gpu_check.log").write_text("log")
    for stem in ("bench_gpu", "bench_gpu_products"):  # every file a full run writes
        for ext in ("jsonl", "png", "md"):
            (results / f"{stem}.{ext}").write_text("x")
    check.copy_out(work, results, out)
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= 8 and all(p.is_file() for p in out.iterdir()), names
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names)
    assert {"bench_gpu.md", "bench_gpu.jsonl", "gpu_check_runs.tar.gz"} <= set(names)
