"""Which implementation of the Chroma-side interface the settings ask for."""

from __future__ import annotations

from pathlib import Path

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.config.settings import ChromaSettings


def open_source(settings: ChromaSettings, *, copy_from: Path | None = None) -> ChromaReader:
    """The ChromaDB source the settings name, opened: a persistent directory (or ``copy_from``, such as a verified
    backup) through a scratch copy, a Chroma server, or Chroma Cloud (``CHROMA_API_KEY``: read within its quotas,
    :mod:`runbook_lib.chroma.cloud`); one clear error when that is impossible."""
    if settings.is_cloud:
        from runbook_lib.chroma.cloud import CloudSource

        return CloudSource.open(settings)
    from runbook_lib.chroma.source import ChromaSource

    return ChromaSource.open(settings, copy_from=copy_from)
