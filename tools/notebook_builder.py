"""Write a thin runbook notebook (markdown, a tagged parameters cell, code cells) without outputs.

Used once per notebook when its cell list changes: ``python tools/notebook_builder.py``.
The notebooks in ``notebooks/`` are the source of truth; this only keeps their metadata uniform.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def write_notebook(path: Path, title_md: str, params: list[str], cells: list[tuple[str, str]]) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells.append(new_markdown_cell(title_md))
    nb.cells.append(new_code_cell("\n".join(params), metadata={"tags": ["parameters"]}))
    for kind, text in cells:
        nb.cells.append(new_markdown_cell(text) if kind == "md" else new_code_cell(text))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, path)
