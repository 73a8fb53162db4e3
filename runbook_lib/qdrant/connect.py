"""Which implementation of the Qdrant-side interface the settings ask for."""

from __future__ import annotations

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.qdrant.base import QdrantStore


def open_target(settings: QdrantSettings, *, fail_fast: bool = False) -> QdrantStore:
    """The Qdrant target the settings name, connected (one clear ConfigError when that is impossible): Qdrant Edge
    for ``QDRANT_EDGE_PATH`` (or no target set), qdrant-client for a server or local mode.

    ``fail_fast`` (an app's calls): transient errors are retried briefly rather than with a step's patience."""
    if settings.kind == "edge":
        from runbook_lib.qdrant.edge import EdgeTarget

        return EdgeTarget(settings)
    from runbook_lib.qdrant.target import QdrantTarget

    return QdrantTarget(settings, fail_fast=fail_fast)
