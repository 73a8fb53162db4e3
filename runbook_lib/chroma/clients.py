"""The one way to open a ChromaDB client, for the source, the sync and the app: a persistent directory, Chroma
Cloud (``CloudClient``), or a Chroma server, with ``CHROMA_TIMEOUT`` and the transient-status hook applied
(:mod:`runbook_lib.chroma.server`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import chromadb
from chromadb.api import AdminAPI, ClientAPI
from chromadb.errors import NotFoundError

from runbook_lib.chroma import server
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import ConfigError, SourceError

log = logging.getLogger(__name__)


def open_client(settings: ChromaSettings, *, path: Path | None = None) -> ClientAPI:
    """chromadb's client for ``settings`` in its tenant and database: an ``HttpClient`` on a server, else a
    ``PersistentClient`` on ``path`` (default ``CHROMA_PERSIST_DIR``), or chromadb's ``CloudClient`` for Chroma Cloud
    (``CHROMA_API_KEY``). One sentence when it cannot be opened."""
    if settings.is_cloud:
        return server.cloud_client(settings)
    if settings.is_server:
        return server.http_client(settings)
    directory = path if path is not None else settings.require_persist_dir()
    try:
        return chromadb.PersistentClient(
            path=str(directory),
            tenant=settings.tenant or chromadb.DEFAULT_TENANT,
            database=settings.database or chromadb.DEFAULT_DATABASE,
        )
    except NotFoundError as exc:
        raise ConfigError(
            f"ChromaDB has no tenant {settings.tenant or 'default_tenant'!r} with database "
            f"{settings.database or 'default_database'!r} in {settings.persist_dir}: fix CHROMA_TENANT / "
            f"CHROMA_DATABASE ({exc})."
        ) from exc
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"Cannot open the ChromaDB directory {directory}: {first}") from exc


def open_admin_client(settings: ChromaSettings) -> AdminAPI:
    """chromadb's ``AdminClient`` on the Chroma server (or Cloud) of ``settings``, with the same timeout and hook."""
    admin = chromadb.AdminClient(server.http_settings(settings))
    server.apply_timeout(admin, settings.timeout_s)
    server.classify_statuses(admin)
    return admin


def close_client(client: Any) -> None:
    """Close a chromadb client; never raises (closing must not hide the error that led here)."""
    try:
        client.close()
    except Exception:  # pragma: no cover
        log.debug("closing the ChromaDB client failed", exc_info=True)
