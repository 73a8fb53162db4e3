"""Packaging: one source of truth for dependencies, committed notebooks clean and parameterized."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import papermill
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject() -> None:
    """conda users get exactly the app layer plus every extra (the extras' references to each other left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= {d for d in extra if not d.startswith(project["name"])}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip_section) == wanted
    assert "python=3.11" in env["dependencies"]
    assert "jupyterlab" in " ".join(pip_section), "conda users get `jupyter lab` too"


def test_app_layer_depends_on_chromadb_qdrant_client_and_qdrant_edge_only() -> None:
    """The base install is the app layer: what it declares besides chromadb, qdrant-client and qdrant-edge-py must
    already come with those, directly or through their own dependencies (so installing the app layer adds nothing
    else to a production app's environment)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(d) for d in project["dependencies"]}
    primary = {"chromadb", "qdrant-client", "qdrant-edge-py"}
    brought = _brought_by(primary)
    assert primary <= base
    assert base - primary <= brought, base - brought - primary
    for heavy in ("papermill", "nbconvert", "pandas", "matplotlib", "jupyterlab"):
        assert heavy not in base


def _brought_by(dists: set[str]) -> set[str]:
    """Every installed distribution that ``dists`` require, transitively (extras' requirements left out)."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = list(dists)
    while todo:
        try:
            found = requires(todo.pop()) or []
        except PackageNotFoundError:  # a requirement whose environment marker left it uninstalled here
            continue
        for name in (_name(r) for r in found if "extra ==" not in r):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def _name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_notebooks_have_no_outputs_and_a_parameters_cell() -> None:
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert [p.name[:2] for p in notebooks][:2] == ["01", "02"]
    for path in notebooks:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, path.name
        params = papermill.inspect_notebook(str(path))
        assert "run_id" in params, path.name
        assert all(p["help"] for p in params.values()), f"{path.name}: every parameter has a help comment"
        assert not any(s in name for name in params for s in ("api_key", "token", "secret", "password")), path.name


def test_ci_calls_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
