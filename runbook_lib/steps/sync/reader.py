"""The source as a sync reads it: opened only when a record has to be read.

A sync with nothing to do in ChromaDB reads nothing there: its plan comes from the snapshot's catalog (ids and
write sequence numbers, SQLite read-only) and the ledger. The scratch copy and chromadb's loaded collections are
made only for the records that changed, so their cost follows the changes, not the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runbook_lib.chroma.catalog import Catalog, CatalogUnavailable
from runbook_lib.chroma.connect import open_source
from runbook_lib.chroma.source import ChromaSource, RecordBatch
from runbook_lib.config.settings import ChromaSettings


class SyncSource:
    """A :class:`ChromaSource` over ``snapshot`` (or the server) opened on first use; names, ids and dimensions come
    from the snapshot's catalog while nothing else was read (a :class:`~runbook_lib.chroma.base.ChromaCatalog`)."""

    def __init__(self, settings: ChromaSettings, snapshot: Path | None) -> None:
        self.settings = settings
        self.snapshot = snapshot
        self._source: ChromaSource | None = None
        self.catalog: Catalog | None = None
        if snapshot is not None:
            try:
                self.catalog = Catalog(snapshot, tenant=settings.tenant, database=settings.database)
            except CatalogUnavailable:
                self.catalog = None

    def _open(self) -> ChromaSource:
        if self._source is None:
            self._source = open_source(self.settings, copy_from=self.snapshot)  # type: ignore[assignment]
        return self._source

    def collection_names(self) -> list[str]:
        return self._open().collection_names()

    def collection_id(self, name: str) -> str | None:
        """The collection's UUID (None: there is no such collection), from the catalog when there is one."""
        if self.catalog is not None and self._source is None:
            return self.catalog.collection_id(name) if name in self.catalog.collection_names() else None
        source = self._open()
        return source.collection_id(name) if name in source.collection_names() else None

    def snapshot_ids(self, name: str) -> list[str]:
        if self.catalog is not None and self._source is None:
            try:
                return self.catalog.snapshot_ids(name)
            except CatalogUnavailable:
                pass
        return self._open().snapshot_ids(name)

    def dimension(self, name: str) -> int | None:
        if self.catalog is not None and self._source is None:
            return self.catalog.dimension(name)
        return self._open().dimension(name)

    def fetch(self, name: str, ids: Sequence[str], *, expected_dim: int | None = None) -> RecordBatch:
        return self._open().fetch(name, ids, expected_dim=expected_dim)

    def release(self) -> None:
        if self._source is not None:
            self._source.release()

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None
        if self._source is not None:
            self._source.close()
            self._source = None
