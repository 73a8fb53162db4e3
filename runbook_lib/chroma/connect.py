"""Which implementation of the Chroma-side interface the settings ask for."""

from __future__ import annotations

from pathlib import Path

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.config.settings import ChromaSettings


def open_source(settings: ChromaSettings, *, copy_from: Path | None = None) -> ChromaReader:
    """The ChromaDB source the settings name, opened: a persistent directory (or ``copy_from``, such as a verified
    backup) through a scratch copy, or a Chroma server (one clear error when that is impossible)."""
    from runbook_lib.chroma.source import ChromaSource

    return ChromaSource.open(settings, copy_from=copy_from)
