"""Which implementation of the Qdrant-side interface the settings ask for."""

from __future__ import annotations

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.qdrant.base import QdrantStore


def open_target(settings: QdrantSettings) -> QdrantStore:
    """The Qdrant target the settings name, connected (one clear ConfigError when that is impossible): Qdrant Edge
    for ``QDRANT_EDGE_PATH``, qdrant-client for a server or local mode."""
    if settings.kind == "edge":
        from runbook_lib.qdrant.edge import EdgeTarget

        return EdgeTarget(settings)
    from runbook_lib.qdrant.target import QdrantTarget

    return QdrantTarget(settings)
