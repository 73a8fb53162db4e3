"""The package's architecture, checked: imports point down the layers, no module is part of a cycle, every module
imports on its own, the app layer loads nothing of the notebook stack, each store library is talked to from its own
folder only, no module reads another library's private attributes, and no code replaces a module in
``sys.modules``."""

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
#: Each store library: the one folder of the package that talks to it, and what of it any other module may import
#: (its data types).
STORE_LIBRARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chromadb": ("chroma", ()),
    "qdrant_client": ("qdrant", ("qdrant_client.models",)),
    "qdrant_edge": ("qdrant", ()),
}
#: Places that still read a private attribute of another library, each with who removes it; the test fails when one
#: is gone (delete its row) or a new one appears.
PRIVATE_READS_TO_REMOVE: dict[str, str] = {
    # chromadb 1.5 creates its httpx session with timeout=None and has no setting for it: CHROMA_TIMEOUT and the
    # transient-status hook are applied to that session (chroma/server.py `_session`, a warning when its shape
    # changes). The public-API alternative (each call in a thread given up after the timeout) leaves a thread
    # blocked forever per call to a hung server and must wrap every call site, the writer's included.
    "runbook_lib/chroma/server.py: getattr(client, '_server', None)": "kept: chromadb has no timeout setting",
    "runbook_lib/chroma/server.py: getattr(getattr(client, '_server', None), '_session', None)": "the same",
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


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module imports from outside the package, anywhere in its code:
    ``import a.b`` gives ``a.b``, ``from a.b import c`` gives ``a.b.c``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def third_party(dotted: str) -> bool:
    top = dotted.split(".")[0]
    return top not in sys.stdlib_module_names and top not in ("__future__", "runbook_lib")


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute | ast.Call | ast.Subscript):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def foreign_holders(tree: ast.AST) -> set[str]:
    """What, in a module, holds something of another library (as source text): the names its imports bind, what
    calling them returns (``client = QdrantClient(...)``, ``self.client = ...``), parameters and variables typed
    with them."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names if third_party(a.name)}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and third_party(node.module):
            bound |= {a.asname or a.name for a in node.names}
    held = set(bound)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _root_name(node.value) in bound:
            held |= {ast.unparse(t) for t in node.targets}
        elif isinstance(node, ast.arg) and node.annotation is not None and _root_name(node.annotation) in bound:
            held.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and _root_name(node.annotation) in bound:
            held.add(ast.unparse(node.target))
    return held


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_getattr(node: ast.AST) -> bool:
    """``getattr(x, "_name")`` (also ``hasattr``, ``setattr``) on anything but ``self`` or ``cls``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr", "setattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and _private(node.args[1].value)
        and ast.unparse(node.args[0]) not in ("self", "cls")
    )


def private_reads(tree: ast.AST) -> list[ast.AST]:
    """``x._name`` where ``x`` holds something of another library (:func:`foreign_holders`), and private names
    read through ``getattr``."""
    held = foreign_holders(tree)
    return [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and _private(node.attr) and ast.unparse(node.value) in held)
        or _private_getattr(node)
    ]


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


def test_store_libraries_are_imported_by_their_folder_only() -> None:
    """Outside its folder, a store library is imported for its data types only (``from qdrant_client import
    models``); everything else goes through the store's interface."""
    wrong = []
    for module, path in modules().items():
        for line, name in imported_names(ast.parse(path.read_text())):
            library = name.split(".")[0]
            if library not in STORE_LIBRARIES or part(module) == STORE_LIBRARIES[library][0]:
                continue
            folder, data_types = STORE_LIBRARIES[library]
            if not any(name == t or name.startswith(f"{t}.") for t in data_types):
                wrong.append(f"{module}:{line} imports {name} (only runbook_lib.{folder} may)")
    assert not wrong, "store libraries imported outside their folder:\n" + "\n".join(wrong)


def test_no_private_attribute_of_another_library() -> None:
    found = {
        f"{path.relative_to(ROOT)}: {ast.unparse(node)}": f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in modules().values()
        for node in private_reads(ast.parse(path.read_text()))
    }
    new = {k: v for k, v in found.items() if k not in PRIVATE_READS_TO_REMOVE}
    assert not new, "private attributes of another library read at: " + ", ".join(f"{v} ({k})" for k, v in new.items())
    gone = set(PRIVATE_READS_TO_REMOVE) - set(found)
    assert not gone, f"removed, so delete their rows from PRIVATE_READS_TO_REMOVE: {sorted(gone)}"


def test_the_import_rules_see_what_they_forbid() -> None:
    """The removed hacks, written as they were, are what the two rules above catch."""
    hacks = ast.parse(
        "import sqlite3\n"
        "from qdrant_client import QdrantClient\n"
        "def connection(client, name):\n"
        "    return getattr(getattr(client, '_client', None), 'collections', None)\n"
        "def remote(url):\n"
        "    client = QdrantClient(url=url)\n"
        "    return client._client\n"
    )
    assert sorted(ast.unparse(n) for n in private_reads(hacks)) == [
        "client._client",
        "getattr(client, '_client', None)",
    ]
    assert [n for _, n in imported_names(hacks)] == ["sqlite3", "qdrant_client.QdrantClient"]


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
