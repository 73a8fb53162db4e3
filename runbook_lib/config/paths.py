"""Where things are: the project root, and relative paths resolved against it.

A notebook may run in JupyterLab (working directory ``notebooks/``), under papermill from any
directory, or through the runner; relative settings such as ``data/chroma_db`` must mean the same
directory in all three, so they resolve against the project root, not the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """``RUNBOOK_HOME`` if set, else the checkout that holds this package, else the working directory."""
    home = os.environ.get("RUNBOOK_HOME")
    if home:
        return Path(home).expanduser().resolve()
    candidate = _PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file() and (candidate / "notebooks").is_dir():
        return candidate
    return Path.cwd().resolve()


def resolve(path: str | os.PathLike[str]) -> Path:
    """An absolute path: absolute input unchanged, relative input against the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (project_root() / p).resolve()


def notebooks_dir() -> Path:
    return project_root() / "notebooks"
