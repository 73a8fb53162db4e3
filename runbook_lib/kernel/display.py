"""How a step shows itself: progress bars, charts and displayed objects, in JupyterLab, under papermill and in a
terminal alike."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def headless() -> bool:
    """True under the runner (``RUNBOOK_HEADLESS=1``): no live progress bars, plain log lines instead."""
    return os.environ.get("RUNBOOK_HEADLESS", "").lower() in ("1", "true", "yes")


def in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar: a widget in JupyterLab, text in a terminal, silent under the runner."""
    if headless() or os.environ.get("RUNBOOK_PROGRESS", "").lower() in ("0", "false", "off"):
        kwargs["disable"] = True
    if in_notebook():
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, **kwargs)


def pyplot() -> Any:
    """``matplotlib.pyplot`` for the runbook's charts: the notebook's backend inside IPython, else the
    non-interactive Agg backend (unless ``MPLBACKEND`` says otherwise), so charts never open windows."""
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        try:
            from IPython import get_ipython

            interactive = get_ipython() is not None
        except ImportError:  # pragma: no cover
            interactive = False
        if not interactive:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def show(obj: Any) -> None:
    """Display in a notebook; print elsewhere."""
    if in_notebook():
        from IPython.display import display

        display(obj)
    else:
        print(obj)


def show_figures(figures: Iterable[tuple[Path | str, str] | Path | str]) -> None:
    """Show saved charts (PNG paths, or (path, alt text) pairs) in a notebook, each with its alt text; in a
    terminal, print where they are. The saved PNG is shown: the same picture whatever matplotlib backend."""
    for item in figures:
        path, alt = item if isinstance(item, tuple) else (item, "")
        if in_notebook():
            from IPython.display import Image, display

            display(Image(filename=str(path), alt=alt or Path(path).stem.replace("_", " ")))
        else:
            print(f"chart: {path}")
