"""The package's architecture, checked: imports point down the layers, no module is part of a cycle, every module
imports on its own, and the app layer loads nothing of the notebook stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "runbook_lib"

#: Each top-level part of the package and its rank: a module may import its own part and parts of lower rank.
LAYERS: dict[str, int] = {
    "errors": 0,
    "config": 1,
    "core": 2,
    "chroma": 3,
    "qdrant": 3,
    "app": 4,
    "state": 4,
    "kernel": 5,
    "steps": 6,
    "runner": 7,
    "vector_db": 8,
    "cli": 8,
}
#: What the app layer (what a production app installs) may import from the package.
APP_MAY_IMPORT = {"errors", "config", "core", "chroma", "qdrant", "app"}
#: Each store's client library, the one part of the package that may import it, and the modules of it any part may
#: import (its plain data types). Everything else goes through that part's interface.
STORE_LIBRARIES: dict[str, tuple[str, frozenset[str]]] = {
    "chromadb": ("chroma", frozenset()),
}
#: Packages of the runbook layer that the app layer must never load.
RUNBOOK_ONLY = ("papermill", "nbconvert", "nbformat", "pandas", "matplotlib", "tqdm", "IPython", "ipykernel", "yaml")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules imported by ``name`` anywhere in its code (function bodies included), except under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking(node):
            skip |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("runbook_lib"):
                found.add(target)
    return found


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) - {"runbook_lib"} for name, path in mods.items()}


def test_every_part_has_a_layer() -> None:
    parts = {part(m) for m in modules() if m != "runbook_lib"}
    assert parts <= set(LAYERS), f"add {parts - set(LAYERS)} to LAYERS with its rank"


def test_imports_point_down() -> None:
    wrong = []
    for module, targets in graph().items():
        if module == "runbook_lib":
            continue
        for target in targets:
            a, b = part(module), part(target)
            if a != b and LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{module} -> {target}")
            if a == "app" and b not in APP_MAY_IMPORT:
                wrong.append(f"{module} -> {target} (the app layer)")
    assert not wrong, "imports that do not point down:\n" + "\n".join(sorted(wrong))


def external_imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, anywhere in its code (``TYPE_CHECKING`` blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_store_libraries_stay_in_their_implementation() -> None:
    wrong = []
    for module, path in modules().items():
        for name in external_imports(path):
            library = name.split(".")[0]
            if library not in STORE_LIBRARIES:
                continue
            owner, data_types = STORE_LIBRARIES[library]
            if part(module) != owner and not any(name == t or name.startswith(f"{t}.") for t in data_types):
                wrong.append(f"{module} imports {name} (only runbook_lib.{owner} may)")
    assert not wrong, "store libraries used outside their implementation:\n" + "\n".join(sorted(set(wrong)))


def test_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _python_files() -> list[Path]:
    """Every Python file of the project: the package, its tests, benchmarks, tools and fixtures."""
    folders = ("runbook_lib", "tests", "benchmarks", "tools", "runbook_fixtures")
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _changes_sys_modules(node: ast.AST) -> bool:
    """``sys.modules[...] = / del sys.modules[...]`` or a mutating method call on ``sys.modules``."""
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(isinstance(t, ast.Subscript) and ast.unparse(t.value) == "sys.modules" for t in targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        mutators = {"pop", "popitem", "setdefault", "update", "clear", "__setitem__", "__delitem__"}
        return ast.unparse(node.func.value) == "sys.modules" and node.func.attr in mutators
    return False


def test_no_code_replaces_modules() -> None:
    """No module stands in for another library's: nothing assigns into, or deletes from, ``sys.modules``."""
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _python_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if _changes_sys_modules(node)
    ]
    assert not found, "code that changes sys.modules: " + ", ".join(found)


def test_no_module_is_large() -> None:
    large = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 450}
    assert not large, f"modules above 450 lines: {large}"


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module in a fresh interpreter: no import works only because another module was loaded first."""

    def load(module: str) -> tuple[str, int, str]:
        proc = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        return module, proc.returncode, proc.stderr.strip().splitlines()[-1:] and proc.stderr.strip().splitlines()[-1]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(m, err) for m, code, err in pool.map(load, modules()) if code != 0]
    assert not failed, failed


def test_app_layer_loads_no_notebook_stack() -> None:
    code = (
        "import sys, runbook_lib.app, runbook_lib.vector_db\n"
        f"print(','.join(m for m in {RUNBOOK_ONLY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"the app layer loaded: {proc.stdout.strip()}"
