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


def holds_storage(settings: QdrantSettings) -> bool:
    """Whether the target can hold anything yet: a server always; an embedded one once its folder exists (local
    mode's ``meta.json``, Edge's folder). A reader skips a target that cannot (opening local mode creates its
    folder)."""
    if settings.kind == "local":
        return settings.path is not None and (settings.path / "meta.json").is_file()
    if settings.kind == "edge":
        return settings.edge_path is not None and settings.edge_path.is_dir()
    return True
