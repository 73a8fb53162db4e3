"""Which implementation of the Chroma-side interface the settings ask for."""

from __future__ import annotations

from pathlib import Path

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import ConfigError


def open_source(settings: ChromaSettings, *, copy_from: Path | None = None) -> ChromaReader:
    """The ChromaDB source the settings name, opened: a persistent directory (or ``copy_from``, such as a verified
    backup) through a scratch copy, a Chroma server, or Chroma Cloud (``CHROMA_API_KEY``: read within its quotas,
    :mod:`runbook_lib.chroma.cloud`); one clear error when that is impossible."""
    if settings.databases:  # several databases of a tenant as one source, collections named <database>__<name>
        if not settings.is_server:
            raise ConfigError(
                "The `databases` parameter reads several databases of a Chroma Cloud tenant (CHROMA_API_KEY) or a "
                "Chroma server (CHROMA_HOST); a ChromaDB directory is read one database at a time (CHROMA_DATABASE)."
            )
        from runbook_lib.chroma.tenant import TenantSource

        return TenantSource.open(settings, open_source)  # type: ignore[return-value]
    if settings.is_cloud:
        from runbook_lib.chroma.cloud import CloudSource

        return CloudSource.open(settings)
    from runbook_lib.chroma.source import ChromaSource

    return ChromaSource.open(settings, copy_from=copy_from)
