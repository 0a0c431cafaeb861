"""Every test that starts a process (DeepSpeed, ``launch/train.py``, a benchmark script) is
marked ``e2e``, so ``pytest -m "not e2e"`` (``make test-fast``) never launches one.

A static check of every ``tests/**/*.py``: a test *launches* when its body, a function it calls
(in its module or imported from another module under tests/, such as ``tests.helpers.run_train``)
or a fixture it requests (from its module or a conftest.py above it) calls, directly or in turn,
``subprocess.*``, ``os.system`` / ``os.popen`` / ``os.spawn*`` / ``os.exec*`` /
``os.posix_spawn*``, ``pty.spawn`` or a (torch.)multiprocessing process.  It is *marked* when
``pytest.mark.e2e`` decorates it or its class, or the ``pytestmark`` of its class or module holds
that mark; a mark on one ``pytest.param`` does not mark the whole test.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent
E2E = "pytest.mark.e2e"
LAUNCH_PREFIXES = ("subprocess.", "os.system", "os.popen", "os.spawn", "os.exec",
                   "os.posix_spawn", "pty.spawn")
PROCESS_APIS = ("Process", "Pool", "spawn", "start_processes", "get_context")


@dataclass
class Analysis:
    launching: set[str] = field(default_factory=set)   # qualified names of functions
    tests: dict[str, bool] = field(default_factory=dict)  # test id -> marked e2e


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _starts_a_process(name: str) -> bool:
    if name.startswith(LAUNCH_PREFIXES):
        return True
    module, _, api = name.rpartition(".")
    return module in ("multiprocessing", "torch.multiprocessing") and api in PROCESS_APIS


class _Module:
    def __init__(self, path: Path, root: Path):
        rel = path.relative_to(root.parent).with_suffix("")
        self.name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.aliases: dict[str, str] = {}
        for node in ast.walk(self.tree):  # function-local imports count too
            if isinstance(node, ast.Import):
                for a in node.names:  # import a.b -> a;  import a.b as c -> c = a.b
                    top = a.name.split(".")[0]
                    self.aliases[a.asname or top] = a.name if a.asname else top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        self.functions: dict[str, ast.FunctionDef] = {}   # local name -> def (incl. Class.method)
        self.classes: dict[str, ast.ClassDef] = {}
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.functions[f"{node.name}.{item.name}"] = item

    def resolve(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        if head in self.functions and not rest:
            return f"{self.name}.{head}"
        base = self.aliases.get(head)
        if base is None:
            return dotted
        return f"{base}.{rest}" if rest else base

    def is_e2e(self, node: ast.AST) -> bool:
        """``node`` is the e2e mark (``pytest.mark.e2e``, maybe called)."""
        if isinstance(node, ast.Call):
            node = node.func
        dotted = _dotted(node)
        return dotted is not None and self.resolve(dotted) == E2E

    def holds_e2e(self, body: list[ast.stmt]) -> bool:
        """A ``pytestmark = <mark> | [<mark>, ...]`` assignment in ``body`` holds the e2e mark."""
        for node in body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
                value = node.value
                marks = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
                if any(self.is_e2e(m) for m in marks):
                    return True
        return False

    def fixtures(self) -> dict[str, str]:
        """Fixture name -> local function name, for the fixtures this module defines."""
        found = {}
        for local, fn in self.functions.items():
            for deco in fn.decorator_list:
                call = deco if isinstance(deco, ast.Call) else None
                dotted = _dotted(call.func if call else deco)
                if dotted and self.resolve(dotted) == "pytest.fixture":
                    name = next((k.value.value for k in (call.keywords if call else [])
                                 if k.arg == "name" and isinstance(k.value, ast.Constant)),
                                local.rpartition(".")[2])
                    found[name] = local
        return found


def _requested_fixtures(module: _Module, fn: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]]
    for deco in fn.decorator_list:  # @pytest.mark.usefixtures("name", ...)
        if isinstance(deco, ast.Call) and _dotted(deco.func) and \
                module.resolve(_dotted(deco.func)) == "pytest.mark.usefixtures":
            names += [a.value for a in deco.args if isinstance(a, ast.Constant)]
    return names


def analyse(root: Path) -> Analysis:
    modules = [_Module(p, root) for p in sorted(root.rglob("*.py"))]
    by_dir: dict[Path, _Module] = {m.path.parent: m for m in modules if m.path.name == "conftest.py"}
    calls: dict[str, set[str]] = {}      # qualified function -> qualified names it calls
    requests: dict[str, set[str]] = {}   # qualified function -> qualified fixture functions
    result = Analysis()
    for module in modules:
        visible: dict[str, str] = {}     # fixture name -> qualified function, nearest wins
        folder = module.path.parent
        chain = []
        while True:
            if folder in by_dir:
                chain.append(by_dir[folder])
            if folder == root:
                break
            folder = folder.parent
        for source in [*reversed(chain), module]:
            visible.update({name: f"{source.name}.{local}"
                            for name, local in source.fixtures().items()})
        for local, fn in module.functions.items():
            qualified = f"{module.name}.{local}"
            called = {module.resolve(d) for node in ast.walk(fn) if isinstance(node, ast.Call)
                      for d in [_dotted(node.func)] if d}
            calls[qualified] = called
            requests[qualified] = {visible[n] for n in _requested_fixtures(module, fn)
                                   if n in visible and visible[n] != qualified}
            if any(_starts_a_process(name) for name in called):
                result.launching.add(qualified)
    changed = True
    while changed:
        changed = False
        for fn in calls:
            if fn not in result.launching and (calls[fn] | requests[fn]) & result.launching:
                result.launching.add(fn)
                changed = True
    for module in modules:
        if not module.path.name.startswith("test_"):
            continue
        module_marked = module.holds_e2e(module.tree.body)
        for local, fn in module.functions.items():
            cls_name, _, name = local.rpartition(".")
            if not name.startswith("test") or (cls_name and not cls_name.startswith("Test")):
                continue
            marked = module_marked or any(module.is_e2e(d) for d in fn.decorator_list)
            if cls_name:
                cls = module.classes[cls_name]
                marked = marked or module.holds_e2e(cls.body) or \
                    any(module.is_e2e(d) for d in cls.decorator_list)
            qualified = f"{module.name}.{local}"
            if qualified in result.launching:
                result.tests[f"{module.path.relative_to(root.parent)}::{local}"] = marked
    return result


def test_every_test_that_starts_a_process_is_marked_e2e():
    found = analyse(TESTS)
    # The check sees the launches it must see (the helpers, a fixture-only launch, a test
    # module run as its own worker) - a detector that finds nothing would pass vacuously.
    assert {"tests.helpers.run_train", "tests.helpers.run_deepspeed"} <= found.launching
    assert "tests/test_inspect.py::test_inspect_bad_input_is_one_line" in found.tests
    assert ("tests/models/test_lowrank.py::"
            "test_shared_low_rank_model_matches_plain_pytorch_under_zero_0_to_3") in found.tests
    assert len(found.tests) >= 20, sorted(found.tests)
    unmarked = sorted(test for test, marked in found.tests.items() if not marked)
    assert not unmarked, ("these tests start a process but are not marked @pytest.mark.e2e "
                          "(make test-fast would run them): " + ", ".join(unmarked))


def test_the_check_follows_helpers_fixtures_and_aliases(tmp_path):
    root = tmp_path / "tests"
    (root / "sub").mkdir(parents=True)
    files = {
        "helpers.py": """
            import subprocess as sp
            def run(args):
                return sp.run(args)
            def quiet():
                return 1
        """,
        "conftest.py": """
            import pytest
            from tests.helpers import run
            @pytest.fixture(name="launched")
            def _launched():
                return run(["true"])
        """,
        "sub/test_a.py": """
            import pytest
            from pytest import mark
            from tests.helpers import quiet, run
            def _twice():
                run([]); run([])
            def test_via_helper():
                _twice()
            def test_via_conftest_fixture(launched):
                pass
            @mark.e2e
            def test_marked_through_alias():
                run([])
            @pytest.mark.parametrize("x", [pytest.param(1, marks=pytest.mark.e2e), 2])
            def test_only_one_param_marked(x):
                run([x])
            def test_no_process():
                quiet()
            class TestGroup:
                pytestmark = [pytest.mark.slow, pytest.mark.e2e]
                def test_in_marked_class(self):
                    import multiprocessing
                    multiprocessing.Process(target=print).start()
        """,
        "sub/test_b.py": """
            import os
            import pytest
            pytestmark = pytest.mark.e2e
            def test_module_marked():
                os.system("true")
        """,
    }
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    found = analyse(root)
    assert found.tests == {
        "tests/sub/test_a.py::test_via_helper": False,
        "tests/sub/test_a.py::test_via_conftest_fixture": False,
        "tests/sub/test_a.py::test_marked_through_alias": True,
        "tests/sub/test_a.py::test_only_one_param_marked": False,
        "tests/sub/test_a.py::TestGroup.test_in_marked_class": True,
        "tests/sub/test_b.py::test_module_marked": True,
    }
